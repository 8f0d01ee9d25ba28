"""Reading and writing 3D images and masks (NIfTI with nibabel, NRRD with SimpleITK).

Every problem with a file the user gave becomes an `InputError` with a one-line message.
Arrays are kept in the file's own voxel order (i, j, k); `Volume.affine` maps voxel indices to RAS mm.
Outputs are written atomically (temporary file in the same folder, then `os.replace`) and in exactly
the reference's grid, so they overlay the input in any viewer.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Tuple

import numpy as np

from .errors import InputError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
NRRD_SUFFIXES = (".nrrd", ".nhdr")
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class Volume:
    """A 3D image: `array` in file voxel order (i, j, k), `affine` voxel -> RAS mm (4x4 float64)."""

    array: np.ndarray
    affine: np.ndarray
    path: Optional[str] = None
    header: Any = field(default=None, repr=False)  # nibabel NIfTI header of the source, kept to write outputs alike

    @property
    def spacing(self) -> np.ndarray:
        return np.linalg.norm(self.affine[:3, :3], axis=0)


def file_format(path) -> str:
    """'nifti' or 'nrrd' from the file name, else an InputError naming the supported types."""
    name = str(path).lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(NRRD_SUFFIXES):
        return "nrrd"
    raise InputError(f"{path}: unsupported file type (use NIfTI .nii/.nii.gz or NRRD .nrrd/.nhdr)")


def load_volume(path, volume_index: Optional[int] = None, *, index_4d_only: bool = False) -> Volume:
    """Load a 3D image; a 4D image needs `volume_index` (0-based) to pick one of its volumes.

    index_4d_only: a 3D image ignores volume_index (batch applies one --volume to the 4D files of a cohort).
    """
    volume = _read(path, volume_index, index_4d_only=index_4d_only)
    if np.ptp(volume.array) == 0:
        raise InputError(f"{path}: the image is constant (every voxel is {volume.array.flat[0]:g}); nothing to segment")
    return volume


MAX_MASK_OVERSHOOT = 1.5  # above this a soft mask is on another scale, not overshooting 1 after resampling


def load_mask(path, reference: Optional[Volume] = None) -> Volume:
    """Load a soft (0..1) or binary cord mask, values clipped to [0, 1] (the overshoot of spline resampling). A
    binary mask stored with another value than 1 (0/255) is read as binary; a soft mask on another scale (0..100,
    0..255) is refused: clipped, its partial-volume voxels would count as whole ones.

    With a `reference`, the mask must lie on the reference's grid; without one it is its own reference.
    """
    mask = _read(path, None, kind="mask")
    if reference is not None:
        check_same_grid(mask, reference, "mask")
    top = float(mask.array.max())
    if top > MAX_MASK_OVERSHOOT:
        if np.unique(mask.array[mask.array > 0]).size > 1:
            raise InputError(f"{path}: mask values reach {top:g}: a soft mask must lie in [0, 1] (divide it by its "
                             "scale) and a binary one hold one value")
        mask.array = (mask.array > 0).astype(np.float32)
    mask.array = np.clip(mask.array, 0.0, 1.0)
    if not np.any(mask.array > 0):
        raise InputError(f"{path}: the mask is empty (no voxel above 0)")
    return mask


def load_labels(path, reference: Volume) -> Volume:
    """Load an integer label map (e.g. vertebral levels, 1=C1, 2=C2, ...) on the grid of `reference`."""
    labels = _read(path, None, kind="level map")
    check_same_grid(labels, reference, "label map")
    labels.array = np.rint(labels.array).astype(np.int32)
    if not np.any(labels.array > 0):
        raise InputError(f"{path}: the label map has no positive label")
    return labels


def check_same_grid(volume: Volume, reference: Volume, what: str) -> None:
    """InputError unless both volumes share shape and affine (within 1% of the smallest voxel size)."""
    tolerance = 0.01 * float(min(reference.spacing.min(), volume.spacing.min()))
    same = volume.array.shape == reference.array.shape and np.allclose(
        volume.affine, reference.affine, rtol=0, atol=tolerance
    )
    if not same:
        raise InputError(
            f"{volume.path}: the {what} grid ({_describe_grid(volume)}) differs from the image grid "
            f"({_describe_grid(reference)}); resample it onto the image first"
        )


def _describe_grid(volume: Volume) -> str:
    shape = "x".join(str(n) for n in volume.array.shape)
    spacing = "x".join(f"{s:.3g}" for s in volume.spacing)
    origin = ",".join(f"{v:.1f}" for v in volume.affine[:3, 3])
    return f"{shape} voxels of {spacing} mm at ({origin})"


def _read(path, volume_index: Optional[int], kind: str = "image", index_4d_only: bool = False) -> Volume:
    """kind: 'image' (a 4D one may be picked from with --volume), or a mask or level map (3D only)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not an image file")
    reader = _read_nifti if file_format(path) == "nifti" else _read_nrrd
    try:
        array, affine, header = reader(path)
    except InputError:
        raise
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as error:  # nibabel/SimpleITK/gzip raise many types for corrupt files
        raise InputError(f"{path}: {_read_failure(error)}") from None
    array = _select_3d(array, path, volume_index, kind, index_4d_only)
    if not np.all(np.isfinite(array)):
        raise InputError(f"{path}: the image has NaN or infinite voxels")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InputError(f"{path}: the image affine is degenerate (zero voxel size)")
    return Volume(array=array, affine=affine, path=str(path), header=header)


def _read_failure(error: Exception) -> str:
    """A short reason for a file that could not be read."""
    import gzip
    import zlib

    from nibabel.filebasedimages import ImageFileError

    reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
    if isinstance(error, ImageFileError):
        return "not a valid NIfTI image"
    if "SimpleITK" in reason:  # its messages name C++ source lines, not the problem
        return "not a readable NRRD image"
    if isinstance(error, (EOFError, gzip.BadGzipFile, zlib.error)):
        return f"the file is truncated or corrupt ({reason})"
    return f"cannot read the image ({reason})"


def _read_nifti(path: Path):
    import nibabel as nib

    image = nib.load(str(path))
    if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(f"{path}: not a NIfTI image")
    array = np.asarray(image.get_fdata(dtype=np.float32))
    return array, np.asarray(image.affine, dtype=np.float64), image.header.copy()


def _read_nrrd(path: Path):
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    if image.GetDimension() not in (3, 4):
        raise InputError(f"{path}: the image is {image.GetDimension()}D; a 3D image is needed")
    array = sitk.GetArrayFromImage(image).astype(np.float32)  # (k, j, i[, component]) or (t, k, j, i)
    if image.GetDimension() == 4:
        array = np.moveaxis(array, 0, -1)  # volumes last, as components and NIfTI's 4th axis: --volume picks one
    array = np.moveaxis(array, (0, 1, 2), (2, 1, 0))
    return array, ras_affine_from_sitk(image), None


def ras_affine_from_sitk(image) -> np.ndarray:
    """Voxel -> RAS affine of a SimpleITK image's first three axes (SimpleITK works in LPS)."""
    dimension = image.GetDimension()
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dimension, dimension)[:3, :3]
    lps = np.eye(4)
    lps[:3, :3] = direction * np.asarray(image.GetSpacing(), dtype=np.float64)[:3]
    lps[:3, 3] = image.GetOrigin()[:3]
    return LPS_TO_RAS @ lps


def _select_3d(array: np.ndarray, path: Path, volume_index: Optional[int], kind: str = "image",
               index_4d_only: bool = False) -> np.ndarray:
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim < 3 or min(array.shape[:3]) < 1:
        raise InputError(f"{path}: the image is {array.ndim}D ({'x'.join(map(str, array.shape))}); a 3D image is needed")
    if array.ndim == 3:
        if volume_index not in (None, 0) and not index_4d_only:
            raise InputError(f"{path}: is a single 3D volume; --volume {volume_index} does not exist")
        return np.ascontiguousarray(array)
    if array.ndim > 4:
        raise InputError(f"{path}: the image is {array.ndim}D; a 3D image is needed")
    count = array.shape[3]
    if kind != "image":
        raise InputError(f"{path}: is 4D with {count} volumes; a 3D {kind} is needed (save the volume you want "
                         "as a file of its own)")
    if volume_index is None:
        raise InputError(
            f"{path}: is 4D with {count} volumes; pass one 3D volume (e.g. the mean DWI), or to segment one of them "
            f"pick it with --volume N (0..{count - 1})"
        )
    if not 0 <= volume_index < count:
        raise InputError(f"{path}: --volume {volume_index} is out of range (the image has volumes 0..{count - 1})")
    return np.ascontiguousarray(array[..., volume_index])


def reorient(array: np.ndarray, affine: np.ndarray, axcodes: str = "RAS") -> Tuple[np.ndarray, np.ndarray]:
    """The same voxels stored in another axis order/direction (e.g. 'LPS', 'PSR', left-handed 'LAS')."""
    import nibabel.orientations as orientations

    current = orientations.io_orientation(affine)
    transform = orientations.ornt_transform(current, orientations.axcodes2ornt(tuple(axcodes)))
    new_array = orientations.apply_orientation(array, transform)
    new_affine = affine @ orientations.inv_ornt_aff(transform, array.shape)
    return np.ascontiguousarray(new_array), new_affine


def refuse_folder(path) -> None:
    """An output named after an existing folder cannot be written: say so."""
    if Path(path).is_dir():
        raise InputError(f"{path}: is a folder; give an output file name")


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path` (same suffixes); it replaces `path` only if the block succeeds."""
    path = Path(path)
    refuse_folder(path)
    suffix = "".join(path.suffixes[-2:]) if path.name.lower().endswith(".gz") else path.suffix
    for attempt in range(3):  # another process (a batch worker cleaning up) may remove an empty folder meanwhile
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise InputError(f"{path}: cannot create the output folder ({error.strerror})") from None
        try:
            handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent)
            break
        except FileNotFoundError:
            if attempt == 2:
                raise InputError(f"{path}: the output folder keeps disappearing") from None
        except OSError as error:
            raise InputError(f"{path}: cannot write here ({error.strerror})") from None
    os.close(handle)
    os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600: give outputs the usual permissions
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def save_like(array: np.ndarray, reference: Volume, path, dtype=np.float32) -> Path:
    """Write `array` (reference's shape, file voxel order) atomically in the reference's grid.

    The format follows the output suffix (NIfTI or NRRD). A NIfTI output of a NIfTI reference keeps the
    reference header, qform and sform (and their codes), so the two overlay exactly.
    """
    path = Path(path)
    array = np.asarray(array)
    if array.shape != reference.array.shape:
        raise ValueError(f"array shape {array.shape} differs from the reference grid {reference.array.shape}")
    writer = _write_nifti if file_format(path) == "nifti" else _write_nrrd
    with atomic_path(path) as temporary:
        writer(array.astype(dtype), reference, temporary)
    return path


def _write_nifti(array: np.ndarray, reference: Volume, path: Path) -> None:
    import nibabel as nib

    if reference.header is not None:
        header = reference.header.copy()
        image_class = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
        image = image_class(array, reference.affine, header=header)
        qform, qcode = header.get_qform(coded=True)
        sform, scode = header.get_sform(coded=True)
        image.set_qform(qform if qcode else reference.affine, code=int(qcode or 0))
        image.set_sform(sform if scode else reference.affine, code=int(scode or 0))
    else:
        image = nib.Nifti1Image(array, reference.affine)
        image.set_qform(reference.affine, code=1)
        image.set_sform(reference.affine, code=1)
    image.header.set_data_dtype(array.dtype)
    image.header.set_slope_inter(1.0, 0.0)
    image.header["cal_min"], image.header["cal_max"] = 0, 0
    nib.save(image, str(path))


def _write_nrrd(array: np.ndarray, reference: Volume, path: Path) -> None:
    import SimpleITK as sitk

    lps = np.linalg.inv(LPS_TO_RAS) @ reference.affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    image = sitk.GetImageFromArray(np.moveaxis(array, (0, 1, 2), (2, 1, 0)))
    image.SetSpacing(spacing.tolist())
    image.SetDirection((lps[:3, :3] / spacing).ravel().tolist())
    image.SetOrigin(lps[:3, 3].tolist())
    sitk.WriteImage(image, str(path), True)
