"""Vertebral levels from intervertebral disc points, projected onto the cord centreline (SCT's `-discfile`).

Convention (SCT's, and PAM50_label_disc's): disc number n is the disc at the top of vertebra n, so 1 = the top of
C1, 2 = C1/C2, 3 = C2/C3, ..., 8 = C7/T1; vertebra n lies between disc n (above) and disc n + 1 (below).
A disc label image holds one voxel (or a small blob) per disc, its value the disc number; other values
(SCT's 49/50 for the pontomedullary groove and junction, PAM50's 60) are not discs and are ignored.

Each disc point is projected onto the centreline (the nearest point of the polyline through the slice
centres, extended straight beyond its ends), which gives it a position s along the cord; a slice gets level n
when its centre lies between the projections of discs n and n + 1. The slice a disc projects into belongs to
the vertebra above it, as in PAM50_levels: on PAM50 the levels from PAM50_label_disc equal PAM50_levels
slice for slice. Slices above the highest disc, below the lowest or between two discs that are not
consecutive (a disc missing) get no level.
"""

from __future__ import annotations

from typing import Dict, Mapping

import numpy as np

from .errors import InputError

LAST_DISC = 29  # S4/S5 (PAM50 codes 1..29 name C1..S5); larger values are other landmarks
MAX_DISC_HEIGHT_MM = 10.0  # a disc label spans a few mm along S-I at most; a vertebral level 15-30 mm
DiscPoints = Dict[int, np.ndarray]  # disc number -> RAS position (mm)


def disc_number(name: str) -> int:
    """'C2/C3' (or 'C2-C3') -> 3, the number of the vertebra below the disc ('C0/C1' -> 1, the top of C1);
    InputError for other names."""
    from .plot import level_code

    upper, _, lower = name.strip().upper().replace("-", "/").partition("/")
    upper_code, lower_code = level_code(upper), level_code(lower)
    if upper.strip() == "C0" and lower_code == 1:  # the skull (C0) over C1: label 1, the top of C1
        return 1
    if upper_code is None or lower_code is None or lower_code != upper_code + 1:
        raise InputError(f"disc point '{name}' is not named like C2/C3 (two adjacent vertebrae, upper/lower)")
    return lower_code


def disc_points_from_names(named_points: Mapping[str, np.ndarray]) -> DiscPoints:
    """{'C2/C3': RAS position, ...} (Slicer markups) -> {3: RAS position, ...}."""
    points: DiscPoints = {}
    for name, position in named_points.items():
        number = disc_number(name)
        if number in points:
            raise InputError(f"disc point '{name}' is given twice: keep one")
        points[number] = np.asarray(position, dtype=float)
    return points


def disc_points_from_labels(labels: np.ndarray, affine: np.ndarray) -> DiscPoints:
    """Disc label image (value = disc number, voxel -> RAS affine) -> {disc number: RAS centre of its voxels}."""
    labels = np.rint(np.asarray(labels)).astype(np.int64)
    points: DiscPoints = {}
    for number in np.unique(labels):
        if not 1 <= number <= LAST_DISC:
            continue
        voxels = np.argwhere(labels == number)
        heights = voxels @ np.asarray(affine, dtype=float)[2, :3]  # S of each voxel's centre (mm, up to a shift)
        height = np.ptp(heights) + np.abs(np.asarray(affine, dtype=float)[2, :3]).sum()  # centres + one voxel's S extent
        if np.ptp(heights) > 0 and height > MAX_DISC_HEIGHT_MM:  # (one voxel is a disc, however thick its slice)
            raise InputError(f"label {number} spans {height:.0f} mm from foot to head: this is a vertebral level map "
                             "(`softseg csa --levels`), not disc labels (one voxel or a small blob per disc)")
        voxel = voxels.mean(axis=0)
        points[int(number)] = np.asarray(affine, dtype=float)[:3, :3] @ voxel + np.asarray(affine, dtype=float)[:3, 3]
    return points


def load_disc_points(path) -> DiscPoints:
    """Disc points of a disc label file (NIfTI or NRRD, any grid: the points are taken in RAS)."""
    from .io import _read

    volume = _read(path, None, kind="disc label file")
    try:
        points = disc_points_from_labels(volume.array, volume.affine)
    except InputError as error:
        raise InputError(f"{path}: {error}") from None
    if not points:
        raise InputError(f"{path}: no disc label (values 1 to {LAST_DISC}, one voxel per disc) in the file")
    return points


def positions_along_centreline(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Arc length (mm, from the first centre) of each point's nearest point on the polyline through `centres`,
    the end segments extended straight (a disc beyond the cord's ends still gets a position)."""
    points = np.atleast_2d(np.asarray(points, dtype=float))
    centres = np.asarray(centres, dtype=float)
    if len(centres) < 2:
        return points[:, 2] - centres[0, 2]  # one slice: along S
    segments = np.diff(centres, axis=0)
    lengths = np.linalg.norm(segments, axis=1)
    lengths[lengths == 0] = 1e-12
    start = np.concatenate([[0.0], np.cumsum(lengths)[:-1]])
    # Fraction along each segment of each point's foot: (points, segments)
    fraction = np.einsum("psk,sk->ps", points[:, None, :] - centres[None, :-1, :], segments) / lengths**2
    low = np.zeros(len(segments))
    high = np.ones(len(segments))
    low[0], high[-1] = -np.inf, np.inf  # the ends go on straight
    fraction = np.clip(fraction, low, high)
    feet = centres[None, :-1, :] + fraction[..., None] * segments[None]
    nearest = np.argmin(np.linalg.norm(points[:, None, :] - feet, axis=2), axis=1)
    rows = np.arange(len(points))
    return start[nearest] + fraction[rows, nearest] * lengths[nearest]


def levels_from_discs(disc_points: Mapping[int, np.ndarray], centres: np.ndarray) -> np.ndarray:
    """The vertebral level (PAM50 code, 0 = none) of each slice, from disc points and the slice centres.

    disc_points: {disc number: RAS position} (disc_points_from_labels / disc_points_from_names / your own);
    centres: (N, 3) RAS centres of the cord in consecutive slices, in slice order (either direction).
    """
    if len(disc_points) < 2:
        raise InputError("at least two disc points (for example C2/C3 and C3/C4) are needed to define levels")
    centres = np.asarray(centres, dtype=float)
    upward = 1.0 if len(centres) < 2 or centres[-1, 2] >= centres[0, 2] else -1.0
    numbers = sorted(disc_points)
    along = upward * positions_along_centreline(np.array([disc_points[n] for n in numbers]), centres)
    for (upper, s_upper), (lower, s_lower) in zip(zip(numbers, along), zip(numbers[1:], along[1:])):
        if s_lower >= s_upper:
            raise InputError(f"disc {lower} lies above disc {upper} along the cord: check the disc labels")
    slice_positions = upward * positions_along_centreline(centres, centres)
    # The slice a disc falls into belongs to the vertebra above: the boundary is half a slice below the disc.
    half_step = 0.5 * float(np.median(np.abs(np.diff(slice_positions)))) if len(centres) > 1 else 0.0
    levels = np.zeros(len(centres), dtype=np.int32)
    for (upper, s_upper), (lower, s_lower) in zip(zip(numbers, along), zip(numbers[1:], along[1:])):
        if lower != upper + 1:
            continue  # a disc is missing between them: which vertebra is which is unknown
        inside = (slice_positions >= s_lower - half_step) & (slice_positions < s_upper - half_step)
        levels[inside] = upper
    return levels


def level_map_from_discs(disc_points: Mapping[int, np.ndarray], mask: np.ndarray, affine: np.ndarray,
                         threshold: float = 0.5) -> np.ndarray:
    """A level map (PAM50 codes on the mask's voxels >= threshold, 0 elsewhere) from disc points: the levels
    `levels_from_discs` gives each slice, painted on the cord (to show them, or to save as a level file)."""
    from .morphometry import slice_axis, slice_centres

    axis = slice_axis(affine)
    indices, centres = slice_centres(mask, affine)
    levels = levels_from_discs(disc_points, centres)
    level_map = np.zeros(np.shape(mask), dtype=np.int32)
    planes = np.moveaxis(level_map, axis, 0)
    cord = np.moveaxis(np.asarray(mask) >= threshold, axis, 0)
    for index, level in zip(indices, levels):
        planes[index][cord[index]] = level
    return level_map

