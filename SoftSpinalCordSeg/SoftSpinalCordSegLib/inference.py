"""Soft spinal-cord segmentation with the shipped model (stub until the model lands)."""

from .errors import ModelNotInstalledError


def segment_image(array, affine, *, device="auto", largest_component=True, progress=None):
    """Return the soft cord mask (float32 in [0, 1]) of a 3D image, in the image's own grid.

    array: 3D image in file voxel order (i, j, k); affine: 4x4 voxel-to-RAS (mm).
    progress: optional callable(fraction_done: float, message: str).
    """
    raise ModelNotInstalledError("no trained model is installed yet: `softseg segment` needs SoftSpinalCordSeg/Resources/Models/")
