"""Soft spinal-cord segmentation with the shipped model.

The image is reoriented to the closest canonical (RAS) axes, each axial slice is resampled in-plane to the
network's 1 mm grid, edge-padded, normalised and segmented; the cord fractions are resampled back to the
input's own grid. The result is float32 in [0, 1], same shape and voxel order as the input.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from .errors import CancelledError, InputError, ModelNotInstalledError
from .io import reorient
from .model import WORKING_SPACING_MM, build_network, normalize_slice, pad_amounts

WEIGHTS_NAME = "softseg_2d.pt"
NOISE_FLOOR = 0.02  # cord fractions below this are set to 0: at that level the output is noise
BATCH_SLICES = 16


def model_dir() -> Path:
    """Folder holding the weights: $SOFTSEG_MODEL_DIR, the installed package data, or the module Resources."""
    here = Path(__file__).resolve().parent
    candidates = [os.environ.get("SOFTSEG_MODEL_DIR"), here / "Models", here.parent / "Resources" / "Models"]
    for candidate in candidates:
        if candidate and (Path(candidate) / WEIGHTS_NAME).is_file():
            return Path(candidate)
    raise ModelNotInstalledError(
        f"no trained model is installed: {WEIGHTS_NAME} was not found in SoftSpinalCordSeg/Resources/Models "
        "(or $SOFTSEG_MODEL_DIR)"
    )


def sha256_of(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_info() -> dict:
    """The model card's machine-readable part (model.json beside the weights)."""
    path = model_dir() / "model.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def resolve_device(device="auto"):
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but no CUDA GPU is available (use --device auto or cpu)")
    if device not in ("cpu", "cuda"):
        raise InputError(f"unknown device {device!r}: use auto, cpu or cuda")
    return device


@functools.lru_cache(maxsize=2)
def load_network(device="cpu"):
    """The network with the shipped weights, after checking their SHA-256 (cached per device)."""
    import torch

    folder = model_dir()
    weights = folder / WEIGHTS_NAME
    expected_file = folder / (WEIGHTS_NAME + ".sha256")
    if not expected_file.is_file():
        raise ModelNotInstalledError(f"the checksum file {expected_file.name} is missing beside the weights")
    expected = expected_file.read_text().split()[0]
    if sha256_of(weights) != expected:
        raise ModelNotInstalledError(f"{weights} does not match its SHA-256: reinstall the extension")
    state = torch.load(weights, map_location="cpu", weights_only=True)
    net = build_network()
    net.load_state_dict({k: v.float() for k, v in state.items()})
    return net.to(device).eval()


def tune_cpu_allocator():
    """Let glibc keep freed memory instead of unmapping every large tensor buffer: CPU inference otherwise
    spends a third of its time in page faults (../shared/notes/cpu-throughput.md). For processes that only
    run the model (command line, batch and Slicer worker processes), not for Slicer itself."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux") or os.environ.get("SOFTSEG_DEFAULT_MALLOC"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (e.g. musl): nothing to tune
        return
    m_trim_threshold, m_mmap_max = -1, -4
    libc.mallopt(m_mmap_max, 0)
    libc.mallopt(m_trim_threshold, 64 << 30)


def canonical_view(array, affine):
    """Array in the closest RAS axes, its spacing along those axes and the way back to the file's order."""
    import nibabel as nib

    canonical, canonical_affine = reorient(array, affine, "RAS")
    spacing = np.linalg.norm(canonical_affine[:3, :3], axis=0)
    file_axes = "".join(nib.aff2axcodes(affine))
    return canonical, spacing, lambda out: reorient(out, canonical_affine, file_axes)[0]


def fast_bf16(device):
    """bf16 autocast where the hardware computes bf16 natively (CUDA, or CPUs with AVX512-BF16/AMX): 1.7x
    faster on this CPU, cord fractions within 0.02 of fp32 and CSA within 0.1 %. Elsewhere fp32."""
    import torch

    if device == "cuda":
        return True
    native = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    return bool(native()) and not os.environ.get("SOFTSEG_FP32")


def predict_slices(net, volume, spacing, device="cpu", progress=None, cancel=None):
    """Cord fraction of every axial slice (last axis) of a canonical volume, in the volume's grid."""
    import torch
    import torch.nn.functional as F

    nx, ny, nz = volume.shape
    size_1mm = [max(8, int(round(n * s / WORKING_SPACING_MM))) for n, s in zip((nx, ny), spacing[:2])]
    (bx, ax), (by, ay) = pad_amounts(size_1mm[0]), pad_amounts(size_1mm[1])
    out = np.zeros(volume.shape, np.float32)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=fast_bf16(device))
    with torch.inference_mode(), autocast:
        for start in range(0, nz, BATCH_SLICES):
            if cancel is not None and cancel():
                raise CancelledError("cancelled")
            stop = min(nz, start + BATCH_SLICES)
            chunk = torch.from_numpy(np.ascontiguousarray(volume[:, :, start:stop].transpose(2, 0, 1), np.float32))
            chunk = F.interpolate(chunk[:, None], size=size_1mm, mode="bilinear", antialias=True, align_corners=False)
            chunk = F.pad(chunk, (by, ay, bx, ax), mode="replicate")[:, 0].numpy()
            chunk = np.stack([normalize_slice(s) for s in chunk])[:, None]
            prob = torch.sigmoid(net(torch.from_numpy(chunk).to(device)).float()).cpu()
            prob = prob[:, :, bx : bx + size_1mm[0], by : by + size_1mm[1]]
            prob = F.interpolate(prob, size=(nx, ny), mode="bilinear", antialias=True, align_corners=False)
            out[:, :, start:stop] = prob[:, 0].numpy().transpose(1, 2, 0)
            if progress is not None:
                progress(stop / nz, f"segmented {stop}/{nz} slices")
    return np.clip(out, 0, 1)


def keep_largest_component(prob, margin_voxels=2):
    """Zero the soft mask outside (a small margin around) the largest 3D component of prob >= 0.5."""
    from scipy import ndimage

    labels, n = ndimage.label(prob >= 0.5, structure=np.ones((3, 3, 3)))
    if n == 0:
        return prob
    mass = ndimage.sum(prob, labels, index=np.arange(1, n + 1))
    keep = labels == (1 + int(np.argmax(mass)))
    keep = ndimage.binary_dilation(keep, structure=np.ones((3, 3, 1)), iterations=margin_voxels)
    return np.where(keep, prob, 0).astype(np.float32)


def segment_image(array, affine, *, device="auto", largest_component=True, progress=None, cancel=None):
    """Return the soft cord mask (float32 in [0, 1]) of a 3D image, in the image's own grid.

    array: 3D image in file voxel order (i, j, k); affine: 4x4 voxel-to-RAS (mm).
    progress: optional callable(fraction_done: float, message: str); cancel: optional callable -> bool.
    """
    array = np.asarray(array)
    if array.ndim != 3:
        raise InputError(f"expected a 3D image, got {array.ndim} dimensions")
    if not np.isfinite(array).all():
        raise InputError("the image contains NaN or infinite values")
    if np.ptp(array) == 0:
        raise InputError("the image is constant: there is nothing to segment")
    device = resolve_device(device)
    net = load_network(device)
    canonical, spacing, back = canonical_view(array.astype(np.float32), np.asarray(affine, np.float64))
    prob = predict_slices(net, canonical, spacing, device, progress, cancel)
    prob[prob < NOISE_FLOOR] = 0
    if largest_component:
        prob = keep_largest_component(prob)
    return np.ascontiguousarray(back(prob), dtype=np.float32)
