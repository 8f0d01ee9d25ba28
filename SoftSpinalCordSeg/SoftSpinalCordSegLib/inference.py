"""Soft spinal-cord segmentation with the shipped model.

The image is reoriented to the closest canonical (RAS) axes and each axial slice is resampled in-plane to the
network's 1 mm grid. The cord is located on a few full slices, then a 64 mm window around it is normalised
and segmented on every slice; the cord fractions are resampled back to the input's own grid. The result is
float32 in [0, 1], same shape and voxel order as the input.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np

from .errors import CancelledError, DamagedModelError, DeviceError, InputError, ModelNotInstalledError
from .io import check_affine, quiet_warnings, reorient
from .model import (MIN_SLICE_PX, WORKING_SPACING_MM, build_network, fill_parameters, frozen, load_architecture,
                    normalize_slice, pad_amounts)

WEIGHTS_NAME = "softseg_2d.pt"
ARCHITECTURE_NAME = "softseg_2d_architecture.pt"  # TorchScript code without weights (model.save_architecture)
NOISE_FLOOR = 0.02  # cord fractions below this are set to 0: at that level the output is noise
BATCH_SLICES = 16
LOCATE_STEP_MM = 10.0  # the locating pass segments one full axial slice per this distance,
LOCATE_MAX_SLICES = BATCH_SLICES  # or fewer, farther apart, where that would take more than one batch
LOCATE_TOLERANCE_MM = 17.5  # the cord moves less than this in-plane per LOCATE_STEP_MM along it (60° lean)
LOCATE_MIN_BLOB_MM2 = 10.0  # smaller blobs of the locating pass are noise, not a cord (about 40-90 mm²)
LOCATE_SKIPPED_SLICES = 4  # sampled slices in a row where the locating pass may miss the cord
CROP_MM = 64  # side of the window segmented around the located cord (1 mm pixels, a multiple of 16)
BRIDGED_GAP_MM = 5.0  # the clean-up joins cord pieces across a gap this long where they overlap in-plane
CONFIDENT_PROBABILITY = 0.9
# Share of the p >= 0.5 mask at CONFIDENT_PROBABILITY under which the cord found is unlike a real one: real
# images read 0.19 (one noisy DWI volume) to 0.58; uniform noise or one bright voxel 0 (session 13).
MIN_CONFIDENT_SHARE = 0.05
# Share of the axial slices where a cord is marked, under which it is unlike a real one (in images of at least
# MIN_SLICES_FOR_SHARE slices): the shared real images read 0.67 (a lumbar field below the conus) to 1; uniform
# noise 1 slice in 20.
MIN_CORD_SLICE_SHARE = 0.25
MIN_SLICES_FOR_SHARE = 8
# Zero regions touching an axial slice's edge, of at least this share of the slice, lie outside the field of view
# (a slab resampled into a larger grid, an oblique reslice, a mask applied): not tissue. In a noise background
# exact zeros can join into such a region too; filling it changes the CSA by well under 1 %.
OUTSIDE_MIN_SHARE = 0.01
FILL_SIGMA_MM = 12.0  # the outside of the field continues the slice smoothly over about this distance


def model_dir() -> Path:
    """Folder holding the weights: $SOFTSEG_MODEL_DIR, the installed package data, or the module Resources.
    A $SOFTSEG_MODEL_DIR without weights is an error, not a silent fall-back to the shipped model."""
    chosen = os.environ.get("SOFTSEG_MODEL_DIR")
    if chosen:
        if not (Path(chosen) / WEIGHTS_NAME).is_file():
            where = "does not exist" if not Path(chosen).exists() else f"holds no {WEIGHTS_NAME}"
            raise DamagedModelError(f"SOFTSEG_MODEL_DIR={chosen} {where}: point it to a folder with the model "
                                         "files, or unset it to use the installed model")
        return Path(chosen)
    here = Path(__file__).resolve().parent
    for candidate in (here / "Models", here.parent / "Resources" / "Models"):
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
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as error:  # ValueError: JSONDecodeError, UnicodeDecodeError
        raise DamagedModelError(f"{path}: the model card cannot be read ({' '.join(str(error).split())[:120]}): "
                                     "reinstall the extension") from None
    if not isinstance(info, dict):
        raise DamagedModelError(f"{path}: the model card is not a JSON object: reinstall the extension")
    return info


def rater_margin_mm() -> float:
    """How far (mm) inside the cord's intensity edge the model draws it, as raters do (model card)."""
    try:
        margin = float(model_info().get("rater_margin_mm", 0.0))
    except (TypeError, ValueError):
        margin = float("nan")
    if not 0.0 <= margin < 10.0:
        raise DamagedModelError(f"{model_dir() / 'model.json'}: rater_margin_mm is not a distance of 0-10 mm: "
                                     "reinstall the extension")
    return margin


def resolve_device(device="auto"):
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise DeviceError("--device cuda was asked for but no CUDA GPU is available (use --device auto or cpu)")
    if device not in ("cpu", "cuda"):
        raise InputError(f"unknown device {device!r}: use auto, cpu or cuda")
    return device


def recorded_sha256(path) -> str:
    """The SHA-256 recorded for path in the file path.sha256 beside it."""
    record = path.with_name(path.name + ".sha256")
    try:
        return record.read_text().split()[0]
    except (OSError, IndexError):
        raise DamagedModelError(f"{record}: the SHA-256 checksum file is missing or empty: reinstall the "
                                "extension") from None


def verified(path):
    """path, after checking it against the SHA-256 recorded beside it."""
    if sha256_of(path) != recorded_sha256(path):
        raise DamagedModelError(f"{path} does not match its SHA-256: reinstall the extension")
    return path


def load_network(device="cpu", folder=None):
    """The network with the shipped weights (or those exported to folder), after checking their SHA-256 (cached
    per device and weights file: other or replaced weights are loaded and checked again).

    Its code comes from the shipped TorchScript architecture where this torch loads it, else from MONAI."""
    folder = model_dir() if folder is None else Path(folder)
    status = (folder / WEIGHTS_NAME).stat()
    return cached_network(str(folder), device, network_dtype(device), status.st_mtime_ns, status.st_size)


@functools.lru_cache(maxsize=2)
def cached_network(folder, device, dtype, *weights_identity):
    import torch

    folder = Path(folder)
    weights = verified(folder / WEIGHTS_NAME)
    architecture = folder / ARCHITECTURE_NAME
    with quiet_warnings():
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - garbage, a truncated zip, a pickle of other objects
            raise DamagedModelError(f"{weights}: not a readable PyTorch weights file: reinstall the extension") from None
        try:
            net = load_architecture(verified(architecture)) if architecture.is_file() else None
            net = fill_parameters(net if net is not None else build_network(), state)
            net = frozen(net.to(device, dtype, memory_format=torch.channels_last).eval())  # channels-last: 20 % faster on CPU
            net.loaded_dtype = dtype  # a frozen network has no parameters to tell it
            _check_network(net, device, dtype, weights)
        except ModelNotInstalledError:
            raise
        except Exception:  # noqa: BLE001 - names or shapes of another network (torch's words: a TorchScript trace)
            raise DamagedModelError(f"{weights}: these weights do not fit the network (other tensor names or "
                                    "shapes): reinstall the extension") from None
    return net


def _check_network(net, device, dtype, weights) -> None:
    """Refuse weights that load but cannot work: a wrong shape fails on a small input, NaN weights give NaN."""
    import torch

    with torch.inference_mode():
        out = net(torch.zeros((1, 1, 32, 32), device=device, dtype=dtype).contiguous(memory_format=torch.channels_last))
    if tuple(out.shape) != (1, 1, 32, 32) or not bool(torch.isfinite(out).all()):
        raise DamagedModelError(f"{weights}: these weights give no valid output (NaN or a wrong shape): "
                                     "reinstall the extension")


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


def exit_process(code: int):
    """End a command-line or worker process whose outputs are all written and closed, skipping the
    interpreter's shut-down where torch was imported: unloading it takes 0.3-0.5 s, a tenth of a whole
    `softseg segment` run. Processes without torch (batch's coordinating one) exit as usual."""
    import sys

    if "torch" not in sys.modules:
        raise SystemExit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def canonical_view(array, affine):
    """Array in the closest RAS axes, its spacing along those axes and the way back to the file's order."""
    import nibabel as nib

    canonical, canonical_affine = reorient(array, affine, "RAS")
    spacing = np.linalg.norm(canonical_affine[:3, :3], axis=0)
    file_axes = "".join(nib.aff2axcodes(affine))
    return canonical, spacing, lambda out: reorient(out, canonical_affine, file_axes)[0]


def outside_field(canonical):
    """Voxels of a canonical volume outside its field of view (OUTSIDE_MIN_SHARE), slice by slice; None where none."""
    from scipy import ndimage

    zero = canonical == 0
    if not zero.any():
        return None
    outside = np.zeros_like(zero)
    min_px = OUTSIDE_MIN_SHARE * zero[..., 0].size
    for k in np.flatnonzero(zero.any(axis=(0, 1))):
        labels, count = ndimage.label(zero[..., k])
        is_outside = np.bincount(labels.ravel(), minlength=count + 1) >= min_px
        on_edge = np.zeros(count + 1, bool)
        for edge in (labels[0], labels[-1], labels[:, 0], labels[:, -1]):
            on_edge[edge] = True
        is_outside &= on_edge
        is_outside[0] = False
        outside[..., k] = is_outside[labels]
    return outside if outside.any() else None


def filled_along_slices(canonical, outside):
    """(canonical where each voxel outside the field of view that is inside it on another axial slice, at the
    same in-plane place, takes the value of the nearest such slice; the voxels still outside): an oblique
    reslice's zero-filled corners show the anatomy next to them along the cord, as a rotation's nearest-voxel
    padding would. A slab or a mask, outside on every slice, is left to filled_outside."""
    partly = outside.any(axis=2) & ~outside.all(axis=2)  # the in-plane places outside on some slices only
    if not partly.any():
        return canonical, outside
    out = outside[partly]  # (places, slices)
    nz = out.shape[1]
    index = np.arange(nz, dtype=np.int32)
    before = np.maximum.accumulate(np.where(out, -1, index).astype(np.int32), axis=1)  # last inside slice at or before
    # first inside slice at or after; nz where there is none
    after = nz - 1 - np.maximum.accumulate(np.where(out, -1, nz - 1 - index).astype(np.int32)[:, ::-1], axis=1)[:, ::-1]
    nearest = np.where((before >= 0) & ((index - before <= after - index) | (after == nz)), before, after)
    filled = canonical.copy()
    values = canonical[partly]
    filled[partly] = np.take_along_axis(values, nearest, axis=1)
    still = outside.copy()
    still[partly] = False
    return filled, still if still.any() else None


def filled_outside(slices, outside_share):
    """1 mm slices (n, X, Y) with the field of view's outside replaced: a pixel partly outside takes the mean of
    its part inside (the zeros left out of its average), one mostly outside a smooth continuation of the slice
    (the mean of the pixels inside weighted by a Gaussian of their distance, FILL_SIGMA_MM; far from any, the
    slice's mean inside), so that the zeros do not enter the slice's grey scale. Next to the inside the fill is
    about the mean of its last centimetre: no streaks (the nearest pixel inside, repeated, made a disc masked
    around the cord read up to 14 % larger), but a step where the inside has a steep gradient.
    outside_share: the share of each pixel outside (the outside mask resampled like the slices)."""
    outside_share = outside_share.float()
    outside = outside_share >= 0.5
    inside = (~outside).float()
    values = slices.float() / (1 - outside_share).clamp(min=0.5)
    values[outside] = 0
    mean_inside = values.sum(dim=(1, 2), keepdim=True) / inside.sum(dim=(1, 2), keepdim=True).clamp(min=1)
    far_weight = 1e-4  # where the Gaussian weight of the inside falls under this (about 3.7 sigma), the mean takes over
    smooth = (_smoothed(values) + far_weight * mean_inside) / (_smoothed(inside) + far_weight)
    values[outside] = smooth[outside]
    return values


def _smoothed(stack, pool=4):
    """A stack of 1 mm slices (n, X, Y) blurred by a Gaussian of FILL_SIGMA_MM, computed on a pool-times coarser
    grid (the fill is smooth: the coarse grid loses nothing of it, at a sixteenth of the cost)."""
    import torch
    import torch.nn.functional as F

    nx, ny = stack.shape[1:]
    padded = F.pad(stack[:, None], (0, -ny % pool, 0, -nx % pool), mode="replicate")
    coarse = F.avg_pool2d(padded, pool)
    sigma = FILL_SIGMA_MM / WORKING_SPACING_MM / pool
    radius = int(np.ceil(4 * sigma))  # to where the Gaussian is under far_weight: no edge where it is cut
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float32) / sigma) ** 2)
    taps = taps / taps.sum()
    coarse = F.pad(coarse, (radius,) * 4, mode="replicate")
    coarse = F.conv2d(F.conv2d(coarse, taps.view(1, 1, -1, 1)), taps.view(1, 1, 1, -1))
    return F.interpolate(coarse, size=padded.shape[2:], mode="bilinear", align_corners=False)[:, 0, :nx, :ny]


def network_dtype(device):
    """bfloat16 where the hardware computes it natively (CUDA GPUs from Ampere on, CPUs with AVX512-BF16/AMX),
    float32 elsewhere or with SOFTSEG_FP32 set. The whole network is cast, not autocast, which converts every
    layer's weights and activations again on each call (a quarter of the network's CPU time in a profile)."""
    import torch

    if device == "cuda":
        try:
            native = torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # torch before 2.4: the question had no emulation in it
            native = torch.cuda.is_bf16_supported()
    else:
        native = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
    return torch.bfloat16 if native and not os.environ.get("SOFTSEG_FP32") else torch.float32


def input_dtype(net):
    """The dtype net reads: the one load_network gave it, else (a network in training) its parameters'."""
    import torch

    recorded = getattr(net, "loaded_dtype", None)
    if recorded is not None:
        return recorded
    parameter = next(iter(net.parameters()), None)
    return torch.float32 if parameter is None else parameter.dtype


def _to_1mm(volume, ks, size_1mm, outside=None):
    """Axial slices ks of a canonical volume, resampled in-plane to the network's 1 mm grid: (n, X, Y); where
    outside (outside_field's mask) is given, with the field of view's outside filled (filled_outside)."""
    import torch

    def resampled(array):
        return resize_slices(torch.from_numpy(np.ascontiguousarray(array[:, :, ks].transpose(2, 0, 1), np.float32)),
                             size_1mm)

    slices = resampled(volume)
    return slices if outside is None else filled_outside(slices, resampled(outside))


def axis_weights(n_in, n_out):
    """(n_out, n_in) matrix resampling one axis over the same extent. Where the axis shrinks, each input
    pixel weighs by the share of the output pixel it covers (partial-volume averaging, as the training
    slices were area-downsampled from 0.5 mm, and exact for cord fractions); where it grows, linear
    interpolation between pixel centres."""
    scale = n_in / n_out
    if n_out < n_in:
        start = np.arange(n_out)[:, None] * scale
        first = np.arange(n_in)[None, :]
        overlap = np.minimum(start + scale, first + 1) - np.maximum(start, first)
        return np.clip(overlap, 0, None) / scale
    x = np.clip((np.arange(n_out) + 0.5) * scale - 0.5, 0, n_in - 1)
    low = np.floor(x).astype(int)
    weights = np.zeros((n_out, n_in))
    np.add.at(weights, (np.arange(n_out), low), 1 - (x - low))
    np.add.at(weights, (np.arange(n_out), np.minimum(low + 1, n_in - 1)), x - low)
    return weights


def resize_slices(slices, size):
    """A stack of slices (n, X, Y) resampled to size (see axis_weights); as is where already that size.

    Antialiased bilinear shrinking (a triangle twice the output pixel) blurs 0.5 mm images more than the
    network saw in training, and they read smaller (`tools/evaluate_model.py`, column "0.5 mm grid")."""
    import torch

    if tuple(slices.shape[1:]) == tuple(size):
        return slices
    rows, cols = (torch.from_numpy(axis_weights(n, m).astype(np.float32)) for n, m in zip(slices.shape[1:], size))
    return torch.einsum("ai,nij,bj->nab", rows, slices.float(), cols)


def _run_network(net, slices, device, min_px, both_polarities=False):
    """Cord fraction of a stack of 1 mm slices (n, X, Y): edge-pad, normalise per slice, UNet, crop back.
    both_polarities: the mean of the slices' reading and of their reading with grey levels inverted."""
    import torch
    import torch.nn.functional as F

    if both_polarities:
        return (_run_network(net, slices, device, min_px) + _run_network(net, -slices, device, min_px)) / 2
    (bx, ax), (by, ay) = pad_amounts(slices.shape[1], min_px), pad_amounts(slices.shape[2], min_px)
    padded = F.pad(slices[:, None], (by, ay, bx, ax), mode="replicate")[:, 0].numpy()
    batch = torch.from_numpy(np.stack([normalize_slice(s) for s in padded])[:, None])
    batch = batch.to(device, input_dtype(net), memory_format=torch.channels_last)
    with torch.inference_mode():
        prob = torch.sigmoid(net(batch).float()).cpu()
    return prob[:, 0, bx : bx + slices.shape[1], by : by + slices.shape[2]]


def _blobs(prob):
    """(centre, cord fraction) of each blob of prob >= 0.5 on one 1 mm slice, those under LOCATE_MIN_BLOB_MM2 left out."""
    from scipy import ndimage

    labels, count = ndimage.label(prob >= 0.5)
    index = np.arange(1, count + 1)
    blobs = zip(ndimage.center_of_mass(prob, labels, index), ndimage.sum(prob, labels, index))
    return [(centre, mass) for centre, mass in blobs if mass >= LOCATE_MIN_BLOB_MM2]


def _cord_centres(prob_1mm, sample_mm=LOCATE_STEP_MM):
    """In-plane centre (1 mm pixels) of the cord on each sampled slice (sample_mm apart); NaN where none.

    The cord is the chain of blobs, one a slice, that follow one another along the cord (each within
    LOCATE_TOLERANCE_MM of the last per LOCATE_STEP_MM between them, skipping up to LOCATE_SKIPPED_SLICES
    slices without it) that is longest, then of the largest total cord fraction: the largest blob of a slice
    can be something else (an artefact, the edge of a tilted field), but nothing else runs the length of the
    cord. Where no two blobs follow one another, each slice keeps its largest blob."""
    blobs = [_blobs(p) for p in prob_1mm]
    chains = []  # per slice, per blob: ((length, cord fraction) of the best chain ending there, previous (slice, blob))
    for n, here in enumerate(blobs):
        chains.append([])
        for centre, mass in here:
            best = ((1, mass), None)
            for m in range(max(0, n - 1 - LOCATE_SKIPPED_SLICES), n):
                reach = LOCATE_TOLERANCE_MM * max(1.0, (n - m) * sample_mm / LOCATE_STEP_MM)
                for b, (other, _) in enumerate(blobs[m]):
                    (length, total), _ = chains[m][b]
                    if np.hypot(*np.subtract(centre, other)) <= reach and (length + 1, total + mass) > best[0]:
                        best = ((length + 1, total + mass), (m, b))
            chains[n].append(best)
    centres = np.full((len(prob_1mm), 2), np.nan)
    ends = [(total, (n, b)) for n, row in enumerate(chains) for b, (total, _) in enumerate(row)]
    if not ends:
        return centres
    (length, _), link = max(ends)
    if length == 1:
        for n, here in enumerate(blobs):
            if here:
                centres[n] = max(here, key=lambda blob: blob[1])[0]
        return centres
    while link is not None:
        n, b = link
        centres[n] = blobs[n][b][0]
        link = chains[n][b][1]
    return centres


def rounded_count(x: float) -> int:
    """round(x), a half within 1e-3 taken as exactly a half (rounded to even, as round() does): readers of one
    header differ in the last bits of its spacing (0.41666666 or 0.41666667 mm: 210 pixels are 87.4999986 or
    87.5000016 mm), and round() gave Slicer and the command line grids a pixel apart."""
    below = math.floor(x)
    return round(below + 0.5) if abs(x - below - 0.5) < 1e-3 else round(x)


def locate_cord(net, volume, size_1mm, spacing, device="cpu", outside=None):
    """Cord centre (1 mm pixels) on every axial slice, from full-field slices one per LOCATE_STEP_MM,
    interpolated along the cord; None where no sampled slice shows a cord."""
    nz = volume.shape[2]
    step = max(1, rounded_count(LOCATE_STEP_MM / spacing[2]), -(-nz // LOCATE_MAX_SLICES))
    sampled = np.arange(min(step // 2, nz - 1), nz, step)
    prob = np.concatenate([_run_network(net, _to_1mm(volume, sampled[i : i + BATCH_SLICES], size_1mm, outside), device,
                                        CROP_MM) for i in range(0, len(sampled), BATCH_SLICES)])
    centres = _cord_centres(prob, step * spacing[2])
    found = ~np.isnan(centres[:, 0])
    if not found.any():
        return None
    return np.stack([np.interp(np.arange(nz), sampled[found], centres[found, i]) for i in range(2)], 1)


def _crop_windows(slices_1mm, origins):
    """The CROP_MM windows at origins, edge-padded where they leave their slice: (n, CROP_MM, CROP_MM)."""
    pad = CROP_MM // 2  # located centres lie inside their slice: a window leaves it by at most this
    padded = np.pad(slices_1mm, ((0, 0), (pad, pad), (pad, pad)), mode="edge")
    return np.stack([p[x + pad : x + pad + CROP_MM, y + pad : y + pad + CROP_MM] for p, (x, y) in zip(padded, origins)])


def _paste_windows(windows, origins, size_1mm):
    """Slices of size_1mm holding each window at its origin (the parts outside the slice dropped), zero elsewhere."""
    pad = CROP_MM // 2
    canvas = np.zeros((len(windows), size_1mm[0] + 2 * pad, size_1mm[1] + 2 * pad), np.float32)
    for c, w, (x, y) in zip(canvas, windows, origins):
        c[x + pad : x + pad + CROP_MM, y + pad : y + pad + CROP_MM] = w
    return canvas[:, pad:-pad, pad:-pad]


def predict_slices(net, volume, spacing, device="cpu", progress=None, cancel=None, both_polarities=False,
                   outside=None):
    """Cord fraction of every axial slice (last axis) of a canonical volume, in the volume's grid; outside:
    outside_field's mask of the volume, filled in the slices the network reads.

    Fields of view over 1.5 CROP_MM take two passes: locate the cord on a few full slices, then segment a
    CROP_MM window around it on every slice. A window is 4-8x cheaper than a full slice, and it is what the
    network was trained on (canals in 128 mm canvases and 64 mm cord windows): whole 230 mm slices made the
    masks 1.5x too large on sub-05 MT-on.
    """
    import torch

    nx, ny, nz = volume.shape
    size_1mm = [max(8, rounded_count(n * s / WORKING_SPACING_MM)) for n, s in zip((nx, ny), spacing[:2])]
    centres = locate_cord(net, volume, size_1mm, spacing, device, outside) if max(size_1mm) > CROP_MM * 1.5 else None
    out = np.zeros(volume.shape, np.float32)
    for start in range(0, nz, BATCH_SLICES):
        if cancel is not None and cancel():
            raise CancelledError("cancelled")
        stop = min(nz, start + BATCH_SLICES)
        slices = _to_1mm(volume, np.arange(start, stop), size_1mm, outside)
        if centres is None:
            prob = _run_network(net, slices, device, MIN_SLICE_PX, both_polarities)
        else:
            origins = np.round(centres[start:stop]).astype(int) - CROP_MM // 2
            windows = torch.from_numpy(_crop_windows(slices.numpy(), origins))
            prob = _run_network(net, windows, device, CROP_MM, both_polarities).numpy()
            prob = torch.from_numpy(np.ascontiguousarray(_paste_windows(prob, origins, size_1mm)))
        out[:, :, start:stop] = resize_slices(prob, (nx, ny)).numpy().transpose(1, 2, 0)
        if progress is not None:
            progress(stop / nz, f"segmented {stop}/{nz} slices")
    return np.clip(out, 0, 1)


def keep_largest_component(prob, slice_mm, margin_voxels=2):
    """Zero the soft mask outside (a small margin around) the largest 3D component of prob >= 0.5.

    prob is in canonical (RAS) axes, slice_mm its spacing along axis 2. Pieces of cord on either side of a gap
    of up to BRIDGED_GAP_MM (at least one slice) count as one where they overlap in-plane: slices where the
    cord was missed (an artefact, a flattened cord) neither cost the slices beyond them nor their faint part."""
    from scipy import ndimage

    cord = prob >= 0.5
    if not cord.any():
        return prob
    # work in the bounding box of the candidates (plus the margin): the cord is a small part of the volume
    box = tuple(slice(max(int(i.min()) - margin_voxels, 0), int(i.max()) + margin_voxels + 1)
                for i in np.nonzero(cord))
    cord = cord[box]
    bridged = bridge_gaps(cord, max(1, int(BRIDGED_GAP_MM / slice_mm + 1e-6)))
    labels, n = ndimage.label(bridged, structure=np.ones((3, 3, 3)))
    mass = ndimage.sum(prob[box], labels, index=np.arange(1, n + 1))
    keep = labels == (1 + int(np.argmax(mass)))
    keep = ndimage.binary_dilation(keep, structure=np.ones((3, 3, 1)), iterations=margin_voxels)
    cleaned = np.zeros(prob.shape, np.float32)
    cleaned[box] = np.where(keep, prob[box], 0)
    return cleaned


def bridge_gaps(cord, gap_slices):
    """cord (boolean, axial slices along axis 2) with each gap of up to gap_slices slices filled where the
    cord on both sides of it overlaps in-plane."""
    bridged = cord.copy()
    nz = cord.shape[2]
    for step in range(2, min(gap_slices + 2, nz)):  # cord at k and k + step: slices between them filled
        both = cord[:, :, :-step] & cord[:, :, step:]
        for offset in range(1, step):
            bridged[:, :, offset : nz - step + offset] |= both
    return bridged


def keep_largest_component_in_grid(prob, affine):
    """keep_largest_component of a soft mask in a file's voxel order, done in canonical axes as segment_image
    does it."""
    canonical, spacing, back = canonical_view(np.asarray(prob, np.float32), np.asarray(affine, np.float64))
    return np.ascontiguousarray(back(keep_largest_component(canonical, spacing[2])), dtype=np.float32)


NO_CORD = "no spinal cord was found in the image (no voxel reaches p 0.5)"


def cord_found(prob) -> bool:
    """Whether the model marked any cord: a voxel of p >= 0.5. Under that, a faint reading is no cord, and
    its summed probability no CSA."""
    return bool(np.any(np.asarray(prob) >= 0.5))


def low_confidence_note(prob, affine=None) -> str:
    """A warning where what the model marked is unlike a real cord, else "": nothing reaches p 0.5, almost
    none of it is certain, or (with the image's affine) it lies on under MIN_CORD_SLICE_SHARE of the axial
    slices of an image of MIN_SLICES_FOR_SHARE or more, where a cord runs through the slices."""
    prob = np.asarray(prob)
    cord = prob[prob >= 0.5]
    if not cord.size:
        return f"{NO_CORD}: check the image" if np.any(prob > 0) else ""
    if np.mean(cord >= CONFIDENT_PROBABILITY) < MIN_CONFIDENT_SHARE:
        return (f"the model is unsure this is a spinal cord (under {MIN_CONFIDENT_SHARE:.0%} of the mask reaches "
                f"p {CONFIDENT_PROBABILITY}): check the result on the image")
    if affine is not None:
        marked = (canonical_view(prob, np.asarray(affine, np.float64))[0] >= 0.5).any(axis=(0, 1))
        if len(marked) >= MIN_SLICES_FOR_SHARE and marked.mean() < MIN_CORD_SLICE_SHARE:
            return (f"the model is unsure this is a spinal cord (it marked {marked.sum()} of {len(marked)} axial "
                    "slices, where a cord runs through them): check the result on the image")
    return ""


# The network works on 1 mm axial slices: their size follows from the header, so is checked before any work.
MIN_FIELD_MM = 15.0  # a cord (about 8 x 12 mm) must fit in an axial slice
MAX_FIELD_MM = 600.0  # wider than a body: the voxel sizes are wrong (500 mm voxels asked for 24 GB)
MAX_VOXELS_1MM = 1 << 28  # all slices resampled to 1 mm (the input's grid is bounded by io.MAX_VOXELS)


def check_field_of_view(shape, spacing) -> None:
    """InputError where the axial slices (the first two canonical axes) cannot hold a cord or are too large
    to resample to the network's 1 mm grid."""
    field = np.asarray(shape[:2], np.float64) * np.asarray(spacing[:2], np.float64)
    described = f"{field[0]:.4g} x {field[1]:.4g} mm ({shape[0]}x{shape[1]} voxels of {spacing[0]:.3g} x {spacing[1]:.3g} mm)"
    if field.min() < MIN_FIELD_MM:
        raise InputError(f"the axial field of view is {described}: too small to hold a spinal cord (at least "
                         f"{MIN_FIELD_MM:g} mm on each side is needed); check the image and its voxel sizes")
    if field.max() > MAX_FIELD_MM or field.prod() * shape[2] > MAX_VOXELS_1MM:
        raise InputError(f"the axial field of view is {described}: larger than a body ({MAX_FIELD_MM:g} mm); "
                         "the voxel sizes in the header are wrong, or crop the image around the spine")


SOFT_MASK_MIN_ZEROS = 0.9  # share of exact zeros over which an image within 0-1 is a mask (real images: none in 0-1)


def soft_mask_zeros(array) -> float:
    """The share of exact zeros of an image whose values lie within 0-1, where it is over SOFT_MASK_MIN_ZEROS:
    a probability map or soft mask (the cord a few per cent of it), not an MRI; else 0."""
    if array.min() < 0 or array.max() > 1:
        return 0.0
    zeros = float(np.mean(array == 0))
    return zeros if zeros >= SOFT_MASK_MIN_ZEROS else 0.0


def is_two_valued(array) -> bool:
    """True where every voxel holds the image's minimum or its maximum (a binary mask, not grey levels); a strided
    sample decides first, so a real image costs one small pass."""
    sample = array.ravel(order="K")[:: max(1, array.size // 100_000)]  # "K": no copy of Slicer's F-ordered arrays
    if np.unique(sample).size > 2:
        return False
    return bool(np.all((array == array.min()) | (array == array.max())))


def segment_image(array, affine, *, device="auto", largest_component=True, progress=None, cancel=None,
                  both_polarities=True):
    """Return the soft cord mask (float32 in [0, 1]) of a 3D image, in the image's own grid.

    array: 3D image in file voxel order (i, j, k); affine: 4x4 voxel-to-RAS (mm).
    progress: optional callable(fraction_done: float, message: str); cancel: optional callable -> bool.
    both_polarities: each slice is read as it is and with its grey levels inverted, and the two readings
    averaged (the default: CSA that follows the contrast less, see the model card); False reads it once, in
    half the network time.
    """
    try:
        array = np.asarray(array)
    except (TypeError, ValueError):
        raise InputError("expected a 3D array of grey levels") from None
    if array.ndim != 3:
        raise InputError(f"expected a 3D image, got {array.ndim} dimensions")
    if array.size == 0:
        raise InputError(f"the image has no voxels (shape {'x'.join(map(str, array.shape))})")
    if array.dtype.kind not in "iuf":
        raise InputError(f"expected real grey levels, got {array.dtype} voxels")
    with np.errstate(over="ignore"):
        array = array.astype(np.float32)  # the network's precision: checked after the cast
    if not np.isfinite(array).all():
        raise InputError("the image contains NaN or infinite values (or values beyond float32's range, 3.4e38)")
    if np.ptp(array) == 0:
        raise InputError("the image is constant: there is nothing to segment")
    if is_two_valued(array):
        raise InputError(f"the image holds only two values ({array.min():g} and {array.max():g}): it looks like a "
                         "mask or label map, not an MRI; give the MRI image itself")
    zeros = soft_mask_zeros(array)
    if zeros:
        raise InputError(f"the image holds values within 0-1, {zeros:.0%} of them 0: it looks like a probability map or "
                         "soft mask, not an MRI; give the MRI image itself")
    affine = check_affine(affine)
    canonical, spacing, back = canonical_view(array, affine)
    check_field_of_view(canonical.shape, spacing)
    device = resolve_device(device)
    net = load_network(device)
    prob = segment_canonical(net, canonical, spacing, device, largest_component=largest_component, progress=progress,
                             cancel=cancel, both_polarities=both_polarities)
    return np.ascontiguousarray(back(prob), dtype=np.float32)


def segment_canonical(net, canonical, spacing, device="cpu", *, largest_component=True, progress=None, cancel=None,
                      both_polarities=False):
    """segment_image's soft mask of a canonical volume with network net: the field of view's outside read as
    such (0 there), the noise floor removed, the largest component kept (largest_component)."""
    outside = outside_field(canonical)
    filled, still_outside = (canonical, None) if outside is None else filled_along_slices(canonical, outside)
    prob = predict_slices(net, filled, spacing, device, progress, cancel, both_polarities, still_outside)
    if outside is not None:
        prob[outside] = 0
    prob[prob < NOISE_FLOOR] = 0
    if largest_component:
        prob = keep_largest_component(prob, spacing[2])
    return prob
