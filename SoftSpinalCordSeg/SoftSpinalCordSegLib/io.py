"""Reading and writing 3D images and masks (NIfTI with nibabel, NRRD with SimpleITK).

Every problem with a file the user gave becomes an `InputError` with a one-line message.
Arrays are kept in the file's own voxel order (i, j, k); `Volume.affine` maps voxel indices to RAS mm.
Outputs are written atomically (temporary file in the same folder, then `os.replace`; inside `all_or_none`
every output of a run is renamed together at its end, or none is) and in exactly the reference's grid, so
they overlay the input in any viewer. Sizes are checked from the header before any voxel is read.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import os
import re
import signal
import socket
import tempfile
import threading
import time
from io import BytesIO
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Tuple

import numpy as np

from .errors import InputError, OutputError

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
    volume_index: Optional[int] = None  # the volume read from a 4D file (None: the file is 3D)

    @property
    def spacing(self) -> np.ndarray:
        return np.linalg.norm(self.affine[:3, :3], axis=0)


def orientation_note(volume: Volume) -> str:
    """A warning where a NIfTI header gives no orientation (qform and sform codes 0), else "": nibabel then
    takes the file's axes as R-L, A-P and I-S, so the slices along its third axis are read as axial."""
    header = volume.header
    if header is None or "qform_code" not in header or int(header["qform_code"]) or int(header["sform_code"]):
        return ""
    return ("the header gives no orientation (qform and sform codes 0): the file's third axis was taken as foot to "
            "head; check on the QC mosaic that its slices are axial")


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
# Spline or sinc resampling overshoots 1 at the edge (up to 1.39 on the shared masks), but the cord's core stays
# at 1 (median of the voxels >= 0.5 at most 1.002 after such resampling): a higher median is another scale.
MAX_MASK_CORE_MEDIAN = 1.05


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
                             "scale) and a binary one hold one value; if this is an MRI image, segment it first")
        mask.array = (mask.array > 0).astype(np.float32)
    elif top > 1:
        core = float(np.median(mask.array[mask.array >= 0.5]))
        if core > MAX_MASK_CORE_MEDIAN:
            raise InputError(f"{path}: the mask's cord voxels lie around {core:.2f}, not 1: a soft mask must lie in "
                             "[0, 1] (divide it by its scale)")
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
        with quiet_warnings():  # nibabel/numpy warnings on odd headers: the checks below say what is wrong
            array, affine, header, picked = reader(path, Selection(volume_index, kind, index_4d_only))
    except InputError:
        raise
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as error:  # nibabel/SimpleITK/gzip raise many types for corrupt files
        raise InputError(f"{path}: {_read_failure(error)}") from None
    check_affine(affine, path)
    return Volume(array=array, affine=affine, path=str(path), header=header, volume_index=picked)


@contextlib.contextmanager
def quiet_warnings():
    """Python warnings (nibabel, numpy) and nibabel's logged header fixes ("pixdim[1,2,3] should be positive")
    never reach the user: what they warn about is checked and said."""
    import logging
    import warnings

    nibabel_log = logging.getLogger("nibabel")
    level = nibabel_log.level
    nibabel_log.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            yield
    finally:
        nibabel_log.setLevel(level)


def check_affine(affine, path=None) -> np.ndarray:
    """The 4x4 voxel -> RAS matrix as float64, or an InputError saying what is wrong with it."""
    where = f"{path}: " if path is not None else ""
    try:
        affine = np.asarray(affine, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{where}the voxel-to-world matrix (affine) is not a 4x4 array of numbers") from None
    if affine.shape != (4, 4):
        raise InputError(f"{where}the voxel-to-world matrix (affine) must be 4x4, not {'x'.join(map(str, affine.shape)) or 'a scalar'}")
    if not np.all(np.isfinite(affine)):
        raise InputError(f"{where}the voxel-to-world matrix (affine: sform/qform, pixel sizes) holds NaN or infinite values: "
                         "fix the image header")
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    with np.errstate(all="ignore"):
        degenerate = spacing.min() <= 0 or abs(np.linalg.det(affine[:3, :3] / spacing)) < 1e-6
    if degenerate:
        raise InputError(f"{where}the voxel-to-world matrix (affine) is degenerate (a voxel size of 0, or two axes alike): "
                         "fix the image header")
    return affine


# Bounds checked on the header, before any voxel is read: a few bytes can claim terabytes.
MAX_VOXELS = 1 << 27  # one 3D volume (134 M voxels, 512 MB as float32; PAM50 at 0.5 mm is 20 M)
MAX_DEFLATE_RATIO = 1032  # the most zlib can compress: a .gz smaller than data / this cannot hold the data


def check_size(path, shape, bytes_per_voxel: int = 4, data_bytes: Optional[int] = None) -> None:
    """InputError where a header's dimensions cannot be real: a size of 0, too many voxels, or more data than
    the file can hold."""
    shape = [int(n) for n in shape]
    if any(n < 1 for n in shape):
        axis = next(i for i, n in enumerate(shape) if n < 1)
        raise InputError(f"{path}: the header gives a size of {shape[axis]} along axis {axis}: the image has no "
                         "voxels (the file is damaged or was not written completely)")
    voxels = int(np.prod(shape[:3], dtype=np.float64))
    if voxels > MAX_VOXELS:
        raise InputError(f"{path}: the header claims {'x'.join(map(str, shape[:3]))} voxels, more than the "
                         f"{MAX_VOXELS:,} this tool handles in one volume: crop or downsample the image "
                         "(or the header is damaged)")
    if data_bytes is not None:
        size = os.path.getsize(path)
        packed = str(path).lower().endswith(".gz")
        if size < (data_bytes / MAX_DEFLATE_RATIO if packed else data_bytes):
            raise InputError(f"{path}: the file is truncated: its header claims {'x'.join(map(str, shape))} voxels "
                             f"({data_bytes:,} bytes) but the file holds {size:,} bytes")


def _read_failure(error: Exception) -> str:
    """A short reason for a file that could not be read."""
    import gzip
    import zlib

    from nibabel.filebasedimages import ImageFileError

    reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
    if isinstance(error, ImageFileError):
        return "not a valid NIfTI image"
    if "SimpleITK" in reason or "itk::" in reason:  # its messages name C++ source lines, not the problem
        return "not a readable NRRD image"
    if isinstance(error, (EOFError, gzip.BadGzipFile, zlib.error)) or "Expected" in reason:
        return f"the file is truncated or corrupt ({reason})"
    return f"cannot read the image ({reason})"


def _raw_nifti_header(path: Path):
    """The header as stored (nibabel's loader silently sets zero pixel sizes to 1: we refuse them instead)."""
    import nibabel as nib
    from nibabel.openers import ImageOpener

    with ImageOpener(str(path)) as stream:
        block = stream.read(540)
    if len(block) < 348:
        raise InputError(f"{path}: not a valid NIfTI image (the file is shorter than a NIfTI header)")
    for order in "<>":  # NIfTI-1 and NIfTI-2 are told apart by sizeof_hdr, in either byte order
        size = int(np.frombuffer(block[:4], dtype=f"{order}i4")[0])
        for header_class in (nib.Nifti1Header, nib.Nifti2Header):
            if size == header_class.sizeof_hdr:
                return header_class.from_fileobj(BytesIO(block), check=False)
    raise InputError(f"{path}: not a valid NIfTI image")


def _check_nifti_header(path: Path, header):
    """Refuse, from the header alone, what cannot be read as a real image; return the 3D/4D shape to read."""
    ndim = int(header["dim"][0])
    if not 1 <= ndim <= 7:
        raise InputError(f"{path}: not a valid NIfTI image (its header gives {ndim} dimensions)")
    shape = [int(n) for n in header["dim"][1 : ndim + 1]]
    dtype = header.get_data_dtype()
    if dtype.kind == "c":
        raise InputError(f"{path}: the voxels are complex numbers ({dtype}); give the magnitude image")
    if dtype.fields is not None or dtype.kind not in "biuf":
        raise InputError(f"{path}: voxels of type {dtype} (e.g. RGB) are not grey levels; give a grey-level image")
    check_size(path, shape, dtype.itemsize,
               data_bytes=int(header["vox_offset"]) + int(np.prod(shape, dtype=np.float64)) * dtype.itemsize)
    if int(header["sform_code"]) == 0:  # the geometry comes from the pixel sizes (qform, or none)
        sizes = np.asarray(header["pixdim"][1:4], dtype=np.float64)[: max(1, min(ndim, 3))]
        if not np.all(np.isfinite(sizes)) or np.any(sizes == 0):
            raise InputError(f"{path}: the header gives a voxel size of {'x'.join(f'{v:g}' for v in sizes)} mm: "
                             "a size of 0 or NaN has no meaning (fix the header's pixdim)")


def _read_nifti(path: Path, selection: "Selection"):
    import nibabel as nib

    header = _raw_nifti_header(path)
    _check_nifti_header(path, header)
    image = nib.load(str(path))
    if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(f"{path}: not a NIfTI image")
    shape = _squeezed_shape(image.shape)
    index = _volume_to_read(path, shape, selection)
    raw = image.dataobj[(slice(None),) * 3 + (index,)] if index is not None else image.dataobj
    array = np.asarray(raw).reshape(shape[:3])  # the stored type, scaled: range checked before float32
    return _as_float32(array, path), np.asarray(image.affine, dtype=np.float64), image.header.copy(), index


def _squeezed_shape(shape) -> Tuple[int, ...]:
    shape = tuple(int(n) for n in shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


@dataclass
class Selection:
    """Which volume of a file to read: volume_index for a 4D image; kind 'image' (a 4D one may be picked from
    with --volume), or a mask or level map (3D only); index_4d_only: a 3D image ignores volume_index (batch
    applies one --volume to the 4D files of a cohort)."""

    volume_index: Optional[int] = None
    kind: str = "image"
    index_4d_only: bool = False


def _volume_to_read(path: Path, shape, selection: Selection) -> Optional[int]:
    """Which 4th-axis volume to read (None for a 3D image), or an InputError for 2D/5D+ images and bad indices."""
    volume_index = selection.volume_index
    if len(shape) < 3:
        raise InputError(f"{path}: the image is {len(shape)}D ({'x'.join(map(str, shape))}); a 3D image is needed")
    if len(shape) == 3:
        if volume_index not in (None, 0) and not selection.index_4d_only:
            raise InputError(f"{path}: is a single 3D volume; --volume {volume_index} does not exist")
        return None
    if len(shape) > 4:
        raise InputError(f"{path}: the image is {len(shape)}D; a 3D image is needed")
    count = shape[3]
    if selection.kind != "image":
        raise InputError(f"{path}: is 4D with {count} volumes; a 3D {selection.kind} is needed (save the volume you "
                         "want as a file of its own)")
    if volume_index is None:
        raise InputError(
            f"{path}: is 4D with {count} volumes; pass one 3D volume (e.g. the mean DWI), or to segment one of them "
            f"pick it with --volume N (0..{count - 1})"
        )
    if not 0 <= volume_index < count:
        raise InputError(f"{path}: --volume {volume_index} is out of range (the image has volumes 0..{count - 1})")
    return volume_index


FLOAT32_MAX = float(np.finfo(np.float32).max)


def _as_float32(array: np.ndarray, path) -> np.ndarray:
    """The voxels as float32, refusing what float32 would turn into other values (inf, or all zeros)."""
    if not np.isrealobj(array):
        raise InputError(f"{path}: the voxels are complex numbers; give the magnitude image")
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)):
            raise InputError(f"{path}: the image has NaN or infinite voxels")
        top = float(np.max(np.abs(array))) if array.size else 0.0
        if top > FLOAT32_MAX:
            raise InputError(f"{path}: voxel values reach {top:.3g}, beyond float32's range (3.4e38): rescale the image")
    converted = np.ascontiguousarray(array, dtype=np.float32)
    if array.dtype.kind == "f" and array.size and np.ptp(converted) == 0 and np.ptp(array) > 0:
        raise InputError(f"{path}: the voxel values ({float(array.min()):.3g} to {float(array.max()):.3g}) differ only "
                         "below float32's precision: rescale the image")
    return converted


def _read_nrrd(path: Path, selection: "Selection"):
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()  # the header only: sizes are checked before the voxels are read
    dimension, components = reader.GetDimension(), reader.GetNumberOfComponents()
    if dimension not in (3, 4):
        raise InputError(f"{path}: the image is {dimension}D; a 3D image is needed")
    if "complex" in sitk.GetPixelIDValueAsString(reader.GetPixelID()).lower():
        raise InputError(f"{path}: the voxels are complex numbers; give the magnitude image")
    spacing = np.asarray(reader.GetSpacing(), dtype=np.float64)
    if not np.all(np.isfinite(spacing)) or np.any(spacing[:3] <= 0):
        raise InputError(f"{path}: the header gives a voxel size of {'x'.join(f'{v:g}' for v in spacing[:3])} mm: "
                         "fix the header's spacings")
    size = list(reader.GetSize())
    check_size(path, size + ([components] if components > 1 else []))
    image = reader.Execute()
    array = sitk.GetArrayFromImage(image)  # (k, j, i[, component]) or (t, k, j, i)
    if image.GetDimension() == 4:
        array = np.moveaxis(array, 0, -1)  # volumes last, as components and NIfTI's 4th axis: --volume picks one
    array = np.moveaxis(array, (0, 1, 2), (2, 1, 0))
    shape = _squeezed_shape(array.shape)
    array = array.reshape(shape)
    index = _volume_to_read(path, shape, selection)
    if index is not None:
        array = array[..., index]
    return _as_float32(array, path), ras_affine_from_sitk(image), None, index


def ras_affine_from_sitk(image) -> np.ndarray:
    """Voxel -> RAS affine of a SimpleITK image's first three axes (SimpleITK works in LPS)."""
    dimension = image.GetDimension()
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dimension, dimension)[:3, :3]
    lps = np.eye(4)
    lps[:3, :3] = direction * np.asarray(image.GetSpacing(), dtype=np.float64)[:3]
    lps[:3, 3] = image.GetOrigin()[:3]
    return LPS_TO_RAS @ lps


def reorient(array: np.ndarray, affine: np.ndarray, axcodes: str = "RAS") -> Tuple[np.ndarray, np.ndarray]:
    """The same voxels stored in another axis order/direction (e.g. 'LPS', 'PSR', left-handed 'LAS')."""
    import nibabel.orientations as orientations

    current = orientations.io_orientation(affine)
    transform = orientations.ornt_transform(current, orientations.axcodes2ornt(tuple(axcodes)))
    new_array = orientations.apply_orientation(array, transform)
    new_affine = affine @ orientations.inv_ornt_aff(transform, array.shape)
    return np.ascontiguousarray(new_array), new_affine


def refuse_folder(path) -> None:
    """Refuse, before any work, an output that cannot be written as a file: an existing folder, or a device,
    pipe or socket (outputs are written to a new file renamed over the old one: that would replace the device
    itself, so such outputs are refused, not written into)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give an output file name")
    if path.exists() and not Path(os.path.realpath(path)).is_file():
        raise InputError(f"{path}: is not a regular file (a device, pipe or socket); outputs are written as files: "
                         "give a file name")


def check_writable(path) -> None:
    """Refuse, before any work, an output whose folder cannot be written (a read-only disk, no permission) or
    cannot be made (a file stands where a folder of its path should be); a symbolic link is judged by its target,
    which is what gets written (atomic_path)."""
    path = Path(path)
    folder = Path(os.path.realpath(path)).parent
    try:
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
    except OSError as error:  # a folder on the way that may not be searched
        raise OutputError(f"{path}: cannot write here ({error.strerror})") from None
    if not folder.is_dir():
        raise OutputError(f"{path}: cannot write here ({folder} is a file, not a folder)")
    if not os.access(folder, os.W_OK | os.X_OK):
        statvfs = getattr(os, "statvfs", None)  # not on Windows
        read_only = statvfs is not None and bool(statvfs(folder).f_flag & os.ST_RDONLY)
        reason = os.strerror(errno.EROFS if read_only else errno.EACCES)
        raise OutputError(f"{path}: cannot write here ({reason})")


_staged = threading.local()  # the outputs of the innermost all_or_none block of this thread


@contextlib.contextmanager
def all_or_none():
    """Every output written (atomic_path) inside the block goes to a temporary file; they all replace their
    targets together when the block ends without error, and are all removed otherwise (an error, Ctrl+C, a
    signal turned into an exception, a full disk). Nested blocks belong to the outermost one."""
    if getattr(_staged, "files", None) is not None:
        yield
        return
    _staged.files = []
    try:
        yield
        with signals_held():
            for temporary, target in _staged.files:
                _replace(temporary, target)
    finally:
        with signals_held():
            files, _staged.files = _staged.files, None
            for temporary, _ in files:
                with contextlib.suppress(OSError):
                    os.remove(temporary)


@contextlib.contextmanager
def signals_held():
    """Hold SIGINT/SIGTERM/SIGHUP (delivered after the block) while files are renamed or cleaned up."""
    held = {getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)}
    if not hasattr(signal, "pthread_sigmask"):  # Windows
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _replace(temporary, target: Path) -> None:
    try:
        os.replace(temporary, target)
    except OSError as error:
        raise OSError(error.errno, error.strerror, str(target)) from None


def _owner_tag() -> str:
    """host-pid of this process, in temporary names: a later run removes those whose process is gone."""
    host = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]
    return f"{host}-{os.getpid()}"


STALE_AFTER_S = 24 * 3600  # a temporary of another machine (shared folder) or unknown owner, left this long, is stale


def remove_stale_temporaries(folder, name: str = "*") -> int:
    """Remove the temporaries (.NAME.HOST-PID.RANDOM.tmp...) left in folder by runs that were killed (their
    process is gone), or left for a day; return how many."""
    host = _owner_tag().split("-")[0]
    removed = 0
    for candidate in Path(folder).glob(f".{name}.*.tmp*"):
        match = re.fullmatch(r"\.(.+)\.([0-9a-f]{6})-(\d+)\.[^.]+\.tmp.*", candidate.name)
        try:
            if match and match.group(2) == host:
                stale = not _process_alive(int(match.group(3)))
            else:
                stale = time.time() - candidate.stat().st_mtime > STALE_AFTER_S
            if stale and candidate.is_file():
                candidate.unlink()
                removed += 1
        except OSError:
            continue
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path` (same suffixes); it replaces `path` only if the block succeeds (and,
    inside all_or_none, only when every output of the block is written). A symbolic link is followed: its
    target is replaced, the link stays. Errors name `path`, not the temporary."""
    path = Path(path)
    refuse_folder(path)
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    suffix = "".join(path.suffixes[-2:]) if path.name.lower().endswith(".gz") else path.suffix
    for attempt in range(3):  # another process (a batch worker cleaning up) may remove an empty folder meanwhile
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputError(f"{path}: cannot create the output folder ({error.strerror})") from None
        remove_stale_temporaries(path.parent, glob.escape(path.name))
        try:
            with signals_held():  # a temporary is made and known to the clean-up, or not made
                handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.{_owner_tag()}.", suffix=".tmp" + suffix,
                                                     dir=path.parent)
                staged = getattr(_staged, "files", None)
                if staged is not None:
                    staged.append((temporary, path))
            break
        except FileNotFoundError:
            if attempt == 2:
                raise OutputError(f"{path}: the output folder keeps disappearing") from None
        except OSError as error:
            raise OutputError(f"{path}: cannot write here ({error.strerror})") from None
    os.close(handle)
    try:
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600: give outputs the usual permissions
        try:
            yield Path(temporary)
        except OSError as error:  # a full disk, a quota: say which output could not be written
            if getattr(error, "filename", None) in (None, temporary, str(temporary)):
                raise OSError(error.errno, error.strerror, str(path)) from None
            raise
        if staged is None:
            with signals_held():
                _replace(temporary, path)
    finally:
        if staged is None:
            with signals_held(), contextlib.suppress(OSError):
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
