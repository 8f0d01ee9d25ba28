"""Angle-corrected cord cross-sectional area (CSA) and shape per axial slice, as SCT's sct_process_segmentation.

Frame. Slices are taken on the acquisition grid, along the array axis whose slice planes are closest to
axial (for a sagittal 3x0.8x0.8 mm stack that is the 0.8 mm S-I axis), so no resampling blurs the soft
mask. All geometry is physical (the affine), and each row is keyed on `z_mm`, the S coordinate (RAS) of the
cord centre in that slice, so RAS, LPS, PSR, left-handed and oblique files of one cord give one table.
Angles follow SCT's definitions (named by their rotation axis): `angle_ap_deg` (SCT's angle_AP) is the
centreline's angle from the slice normal about the A-P axis, positive when the cord leans towards L going up;
`angle_rl_deg` (angle_RL) about the R-L axis, positive when it leans towards A.

CSA. The centreline is the soft-weighted centre of mass of each slice, smoothed by a smoothing spline
(penalty set by a length in mm) along the slice normal; its tangent t gives theta, the angle between t and
the acquisition slice normal n, and

    CSA = sum(soft values in the slice) * in-plane voxel area * cos(theta).

This keeps the partial volume and is exact for a straight tube at any tilt and for oblique slices (the cut
of a tube by a plane has area A / cos(theta)). SCT multiplies by cos(angle_AP) * cos(angle_RL) instead,
which differs from cos(theta) by under 0.5% at the usual angles (< 15 degrees each).

Shape (slice_shape). On the sub-pixel 0.5 outline of the soft mask, projected along t onto the plane
perpendicular to the cord: the moment ellipse gives diameters (`diameter_ap_ellipse_mm`, `diameter_rl_mm`),
eccentricity and the orientation of its major axis (SCT's sign: from L towards A); `diameter_ap_mm` is SCT 7's AP
profile; solidity is area / convex-hull area. Summaries give the mean and the population SD (SCT's STD).
"""

from __future__ import annotations

import csv
import math
from typing import List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .errors import InputError

# Metrics in SCT's order (its KEYS_DEFAULT), with SCT's meanings; the SCT-format CSV renames them (sctcsv.py).
METRICS = ["csa_mm2", "angle_ap_deg", "angle_rl_deg", "diameter_ap_mm", "diameter_ap_ellipse_mm", "diameter_rl_mm",
           "eccentricity", "orientation_deg", "solidity"]
SLICE_COLUMNS = ["slice", "z_mm", *METRICS, "length_mm", "level", "x_mm", "y_mm"]
SMOOTHING_MM = 20.0  # centreline smoothing length (wavelengths shorter than this are damped)
MIN_SLICE_AREA = 1e-3  # soft sum below this (in voxels) counts as no cord in the slice
SUSPECT_TOLERANCE = 0.25  # a slice whose CSA departs this much (relative) from its neighbours' is worth a look,
SUSPECT_MIN_MM2 = 10.0  # if that is also this much in mm² (the tapering tip of the cord changes fast, but by little)
SUSPECT_WINDOW_MM = 10.0  # its neighbours: the slices within this distance along S, on both sides
OVERSIZED_CSA_MM2 = 110.0  # over healthy adult cords (about 60-90 mm² in the cervical cord, less below): a slice
# reading more has more often taken in CSF or tissue next to the cord than met a cord that large (a swollen one can be)
STEEP_ANGLE_DEG = 45.0  # the model reads slices this oblique to the cord less well, and misses it beyond ~50 degrees


class Table:
    """Rows (dicts) with fixed columns; written as CSV atomically."""

    def __init__(self, rows: List[dict], columns: Sequence[str]):
        self.rows = rows
        self.columns = list(columns)

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, name: str) -> np.ndarray:
        return np.array([np.nan if row[name] is None else row[name] for row in self.rows], dtype=float)

    def write_csv(self, path) -> None:
        from .io import atomic_path

        with atomic_path(path) as temporary, open(temporary, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(self.columns)
            for row in self.rows:
                writer.writerow([_format(row.get(name)) for name in self.columns])


def _format(value) -> str:
    """Floats with 6 decimals (mm, mm², degrees, ratios): a reader gets every value to within 5e-7."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (float, np.floating)):
        text = f"{value:.6f}"
        return text[1:] if text == "-0.000000" else text  # a rounded-away sign differs between equal tables
    return str(value)


class CsaTable(Table):
    """Per-slice morphometry, ordered from inferior to superior (increasing `z_mm`)."""

    def __init__(self, rows: List[dict]):
        super().__init__(rows, SLICE_COLUMNS)

    @classmethod
    def read_csv(cls, path) -> "CsaTable":
        """The table of a per-slice CSV written by `write_csv` (`softseg csa`, `segment`, `batch`)."""
        rows = []
        with open(path, newline="") as handle:
            for record in csv.DictReader(handle):
                row = {name: (float(text) if text not in ("", None) else None) for name, text in record.items()}
                row["slice"] = int(row["slice"])
                row["level"] = None if row.get("level") is None else int(row["level"])
                for name in SLICE_COLUMNS:  # a column added since the file was written
                    row.setdefault(name, None)
                rows.append(row)
        return cls(rows)

    def select(self, levels=None, slices=None, z_range=None) -> List[dict]:
        """Rows within a level range, a slice-index range and/or a z range (each an inclusive (low, high))."""
        chosen = []
        for row in self.rows:
            if levels is not None and (row["level"] is None or not levels[0] <= row["level"] <= levels[1]):
                continue
            if slices is not None and not slices[0] <= row["slice"] <= slices[1]:
                continue
            if z_range is not None and not z_range[0] <= row["z_mm"] <= z_range[1]:
                continue
            chosen.append(row)
        return chosen

    def steep_slices(self, limit_deg: float = STEEP_ANGLE_DEG) -> List[int]:
        """Slice indices that the centreline crosses at more than limit_deg from their normal (angle_ap and
        angle_rl combined): the cut is over 1.4x the cross-section there, and a segmentation made slice by slice
        is unreliable (the model card's limits)."""
        tan_ap, tan_rl = (np.tan(np.radians(self.column(name))) for name in ("angle_ap_deg", "angle_rl_deg"))
        steep = np.degrees(np.arctan(np.hypot(tan_ap, tan_rl))) > limit_deg
        return sorted(int(row["slice"]) for row, flag in zip(self.rows, steep) if flag)

    def oversized_slices(self, limit_mm2: float = OVERSIZED_CSA_MM2) -> List[int]:
        """Slice indices whose CSA is over limit_mm2, larger than a healthy adult cord: a run of such slices
        agrees with its neighbours, which suspect_slices then lets pass. A hint for the QC mosaic."""
        return sorted(int(row["slice"]) for row in self.rows if row["csa_mm2"] > limit_mm2)

    def suspect_slices(self, tolerance: float = SUSPECT_TOLERANCE, window_mm: float = SUSPECT_WINDOW_MM) -> List[int]:
        """Slice indices whose CSA departs by more than `tolerance` and SUSPECT_MIN_MM2 from the median of
        their neighbours: as many slices below as above, within `window_mm` (a balanced set keeps a steady
        change along the cord, such as the conus tapering, at its median; the end slices are not judged).
        The cord changes slowly along S, so such a slice is more often misread (blur, motion, artefact) than
        real: a hint for the QC mosaic, nothing is removed."""
        z, csa = self.column("z_mm"), self.column("csa_mm2")
        order = np.argsort(z, kind="stable")
        z, csa = z[order], csa[order]
        suspects = []
        for i in range(len(z)):
            below = np.flatnonzero((z < z[i]) & (z >= z[i] - window_mm))
            above = np.flatnonzero((z > z[i]) & (z <= z[i] + window_mm))
            pairs = min(below.size, above.size)
            if not pairs:
                continue
            reference = np.median(np.concatenate([csa[below[-pairs:]], csa[above[:pairs]]]))
            departure = abs(csa[i] - reference)
            if departure > tolerance * reference and departure > SUSPECT_MIN_MM2:
                suspects.append(self.rows[order[i]]["slice"])
        return sorted(suspects)

    def summarize(self, levels=None, slices=None, z_range=None, per_level: bool = False) -> Table:
        """Mean, SD and number of slices of every metric over a selection (SCT's -vert / -z / -perlevel)."""
        rows = self.select(levels, slices, z_range)
        if not rows:
            raise InputError("no slice of the mask falls in the requested level / slice range")
        groups: List[Tuple[object, List[dict]]]
        if per_level:
            found = sorted({row["level"] for row in rows if row["level"] is not None})
            if not found:
                raise InputError("no vertebral level is known for these slices: no levels were given, or they do not reach the cord")
            groups = [(level, [row for row in rows if row["level"] == level]) for level in found]
        else:
            label = "" if levels is None else (str(levels[0]) if levels[0] == levels[1] else f"{levels[0]}:{levels[1]}")
            groups = [(label, rows)]
        columns = ["level", "slices", "n_slices", "z_min_mm", "z_max_mm"]
        columns += [f"{metric}_{stat}" for metric in METRICS for stat in ("mean", "sd")] + ["length_mm_sum"]
        return Table([_aggregate(label, group) for label, group in groups], columns)


def _aggregate(label, rows: List[dict]) -> dict:
    """Mean and population SD (ddof=0, as SCT's STD) of every metric, the cord length, the slice range."""
    indices = [row["slice"] for row in rows]
    z = [row["z_mm"] for row in rows]
    summary = {
        "level": label, "slices": f"{min(indices)}:{max(indices)}", "n_slices": len(rows),
        "z_min_mm": min(z), "z_max_mm": max(z),
    }
    inferior_first = [row.get("slice_is") for row in rows]
    if None not in inferior_first:  # SCT's `Slice (I->S)` range (not a CSV column: the SCT-format writer's)
        summary["slices_is"] = f"{min(inferior_first)}:{max(inferior_first)}"
    for metric in METRICS:
        values = np.array([np.nan if row[metric] is None else row[metric] for row in rows], dtype=float)
        values = values[np.isfinite(values)]
        if metric == "orientation_deg":  # an axis: -89 and +89 degrees are 2 apart, their mean is 90, not 0
            summary[f"{metric}_mean"], summary[f"{metric}_sd"] = _axial_mean_sd(values)
            continue
        summary[f"{metric}_mean"] = float(values.mean()) if values.size else math.nan
        summary[f"{metric}_sd"] = float(values.std()) if values.size else math.nan
    lengths = [row.get("length_mm") for row in rows]
    summary["length_mm_sum"] = math.nan if None in lengths else float(sum(lengths))
    return summary


def _axial_mean_sd(degrees: np.ndarray) -> Tuple[float, float]:
    """Circular mean and SD of axis orientations (period 180 degrees), the mean in [-90, 90); the SD equals the
    population SD of the other metrics for a small spread."""
    from scipy.stats import circmean, circstd

    if not degrees.size:
        return math.nan, math.nan
    return float(circmean(degrees, high=90.0, low=-90.0)), float(circstd(degrees, high=90.0, low=-90.0))


def dice(mask: np.ndarray, reference: np.ndarray) -> float:
    """Dice overlap of two boolean masks (1 when both are empty)."""
    total = int(mask.sum()) + int(reference.sum())
    return 2.0 * int((mask & reference).sum()) / total if total else 1.0


def slice_axis(affine: np.ndarray) -> int:
    """The array axis whose slice planes are closest to axial (normal closest to S)."""
    linear = np.asarray(affine, dtype=float)[:3, :3]
    scores = []
    for axis in range(3):
        first, second = [linear[:, other] for other in range(3) if other != axis]
        normal = np.cross(first, second)
        scores.append(abs(normal[2]) / np.linalg.norm(normal))
    return int(np.argmax(scores))


def compute_csa(mask: np.ndarray, affine: np.ndarray, levels: Optional[np.ndarray] = None,
                smoothing_mm: float = SMOOTHING_MM, discs: Optional[Mapping[int, np.ndarray]] = None) -> CsaTable:
    """Per-slice CSA and shape of a soft (0..1) or binary cord mask (file voxel order, voxel -> RAS affine).

    Vertebral levels come from a level map on the mask's grid (`levels`) or from disc points projected onto
    the centreline (`discs`: {disc number: RAS position}, see discs.py)."""
    from .io import check_affine

    try:
        mask = np.asarray(mask, dtype=np.float32)
    except (TypeError, ValueError):
        raise InputError("the mask must be a 3D array of numbers in [0, 1]") from None
    affine = check_affine(affine)
    if mask.ndim != 3:
        raise InputError(f"the mask must be 3D, not {mask.ndim}D")
    if not np.all(np.isfinite(mask)):
        raise InputError(f"the mask has {int(np.count_nonzero(~np.isfinite(mask)))} NaN or infinite voxels")
    if not isinstance(smoothing_mm, (int, float, np.number)) or not (np.isfinite(smoothing_mm) and smoothing_mm >= 0):
        raise InputError(f"smoothing_mm must be a length of 0 mm or more, not {smoothing_mm!r}")
    mask = np.clip(mask, 0.0, 1.0)
    if levels is not None and np.shape(levels) != mask.shape:
        raise InputError("the level map and the mask have different shapes")
    if levels is not None and discs is not None:
        raise InputError("give the vertebral levels either as a level map or as disc points, not both")
    axis = slice_axis(affine)
    in_plane = [other for other in range(3) if other != axis]
    linear = affine[:3, :3]
    edge_u, edge_v = linear[:, in_plane[0]], linear[:, in_plane[1]]
    normal = np.cross(edge_u, edge_v)
    pixel_area = float(np.linalg.norm(normal))
    normal /= pixel_area
    if normal[2] < 0:
        normal = -normal
    slice_step = float(abs(normal @ linear[:, axis]))  # distance between slice planes along the normal
    upward = bool(normal @ linear[:, axis] > 0)  # the slice index grows towards S

    plane = np.moveaxis(mask, axis, 0)
    indices, centres, sums = slice_centres(mask, affine, with_sums=True)
    # Slices that hold only part of the cord (its ends, cut by the field of view) have shifted centres:
    # they count less in the centreline fit.
    completeness = np.clip(sums / np.median(sums), 0.05, 1.0) ** 2
    tangents = centreline_tangents(centres, indices * slice_step, smoothing_mm, completeness)
    tangents *= np.sign(tangents @ normal)[:, None]

    level_planes = None if levels is None else np.moveaxis(np.asarray(levels), axis, 0)
    disc_levels = None
    if discs is not None:
        from .discs import levels_from_discs

        disc_levels = levels_from_discs(discs, centres)
    rows = []
    for row, index in enumerate(indices):
        tangent = tangents[row]
        cos_theta = float(tangent @ normal)
        shape = slice_shape(plane[index], edge_u, edge_v, tangent)
        if disc_levels is not None:
            level = int(disc_levels[row]) or None
        else:
            level = None if level_planes is None else slice_level(level_planes[index], plane[index])
        rows.append({
            "slice": int(index),
            "slice_is": int(index) if upward else mask.shape[axis] - 1 - int(index),  # SCT's Slice (I->S)
            "z_mm": float(centres[row, 2]),
            "csa_mm2": float(sums[row]) * pixel_area * cos_theta,
            # SCT's angles, named by their rotation axis: about A-P (leaning towards L), about R-L (towards A)
            "angle_ap_deg": math.degrees(math.atan2(-tangent[0], tangent[2])),
            "angle_rl_deg": math.degrees(math.atan2(tangent[1], tangent[2])),
            **shape,
            "level": level,
            "x_mm": float(centres[row, 0]),
            "y_mm": float(centres[row, 1]),
            "length_mm": slice_step / cos_theta,
        })
    rows.sort(key=lambda item: item["z_mm"])
    return CsaTable(rows)


def slice_centres(mask: np.ndarray, affine: np.ndarray, with_sums: bool = False):
    """Indices of the slices (along slice_axis) that hold cord, and the RAS soft-weighted centre of each
    (and, with_sums, each slice's soft sum in voxels)."""
    mask = np.asarray(mask, dtype=np.float32)
    affine = np.asarray(affine, dtype=float)
    if mask.ndim != 3:
        raise InputError(f"the mask must be 3D, not {mask.ndim}D")
    axis = slice_axis(affine)
    in_plane = [other for other in range(3) if other != axis]
    plane = np.moveaxis(mask, axis, 0)
    # Sums in float64: a float32 sum is good to ~1e-7 relative, which shows in the 6th decimal of the CSV
    # (centres move by ~1e-6 mm when the same mask is stored with a flipped axis).
    sums = plane.reshape(plane.shape[0], -1).sum(axis=1, dtype=np.float64)
    indices = np.flatnonzero(sums > MIN_SLICE_AREA)
    if indices.size == 0:
        raise InputError("the mask is empty")
    sums_u = plane.sum(axis=2, dtype=np.float64)[indices]  # (slices, u): profile along u
    sums_v = plane.sum(axis=1, dtype=np.float64)[indices]
    voxels = np.zeros((indices.size, 3))
    voxels[:, axis] = indices
    voxels[:, in_plane[0]] = sums_u @ np.arange(plane.shape[1]) / sums[indices]
    voxels[:, in_plane[1]] = sums_v @ np.arange(plane.shape[2]) / sums[indices]
    centres = voxels @ affine[:3, :3].T + affine[:3, 3]
    return (indices, centres, sums[indices]) if with_sums else (indices, centres)


def centreline_tangents(centres: np.ndarray, positions: np.ndarray, smoothing_mm: float,
                        weights: Optional[np.ndarray] = None) -> np.ndarray:
    """Unit tangents of the centre-of-mass curve, smoothed along `positions` (mm along the slice normal).

    A cubic smoothing spline with penalty (smoothing_mm / 2 pi)^4 damps wavelengths shorter than about
    `smoothing_mm` (staircase of the voxel grid, segmentation noise) and leaves straight lines exact.
    Fewer than 5 slices: a straight-line fit.
    """
    from scipy.interpolate import make_smoothing_spline

    positions = np.asarray(positions, dtype=float)
    if positions.size < 2:
        derivative = np.zeros_like(centres)
        derivative[:, 2] = 1.0
        return derivative
    if positions.size < 5:
        slopes = np.polyfit(positions, centres, 1, w=None if weights is None else np.sqrt(weights))[0]
        derivative = np.tile(slopes, (positions.size, 1))
    else:
        penalty = (smoothing_mm / (2 * math.pi)) ** 4
        derivative = np.column_stack([
            make_smoothing_spline(positions, centres[:, column], w=weights, lam=penalty).derivative()(positions)
            for column in range(3)
        ])
    return derivative / np.linalg.norm(derivative, axis=1, keepdims=True)


SHAPE_KEYS = ["diameter_ap_mm", "diameter_ap_ellipse_mm", "diameter_rl_mm", "eccentricity", "orientation_deg", "solidity"]
PROFILE_BAND_MM = 3.0  # the AP diameter is the mean AP extent over this R-L band through the centroid (SCT 7)
PROFILE_STEP_MM = 0.1  # spacing of the samples along each profile line (SCT's 0.1 mm grid)
PROFILE_LINES = 12  # lines across the band (SCT: 30, one per 0.1 mm; the band's mean needs fewer)
CONTOUR_UPSAMPLING = 2  # the 0.5 contour is traced on a grid this many times finer than the pixels
CROP_PAD = 3  # pixels kept around the >= 0.5 region (the soft edge around it)


def slice_shape(soft: np.ndarray, edge_u: np.ndarray, edge_v: np.ndarray, tangent: np.ndarray) -> dict:
    """Diameters, eccentricity, orientation and solidity of a soft 2D slice, in the plane normal to `tangent`.

    The region is bounded by the 0.5 iso-contour of the soft mask, linearly interpolated between pixel
    centres (marching squares): a sub-pixel polygon, as SCT's threshold of the slice upsampled to 0.1 mm, but
    without a grid of its own. Its exact area moments give the ellipse (diameters 4 sqrt(variance), the axis
    closer to R-L is `diameter_rl_mm`); `diameter_ap_mm` is the AP profile of SCT 7: the soft values summed
    along lines parallel to the AP-like ellipse axis, every 0.1 mm across a 3 mm band through the centroid,
    averaged. Everything is projected along the cord, so a tilted cord gives its true cross-section.
    """
    empty = dict.fromkeys(SHAPE_KEYS, math.nan)
    region = soft >= 0.5
    if not region.any():
        return empty
    rows, cols = np.flatnonzero(region.any(axis=1)), np.flatnonzero(region.any(axis=0))
    low = np.maximum([rows[0] - CROP_PAD, cols[0] - CROP_PAD], 0)
    high = np.minimum([rows[-1] + CROP_PAD + 1, cols[-1] + CROP_PAD + 1], soft.shape)
    crop = np.pad(np.asarray(soft[low[0]:high[0], low[1]:high[1]], dtype=np.float64), 1)  # closed contours
    right = np.array([1.0, 0.0, 0.0]) - tangent[0] * tangent
    right /= np.linalg.norm(right)
    basis = np.vstack([right, np.cross(tangent, right)])  # rows: R-like and A-like directions normal to the cord
    pixel = basis @ np.column_stack([edge_u, edge_v])  # crop pixel (row, col) -> mm in that plane
    polygon = _outer_contour(crop) @ pixel.T
    area, centroid, covariance = _polygon_moments(polygon)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    minor, major = 4.0 * np.sqrt(np.maximum(eigenvalues, 0.0))
    theta = math.degrees(math.atan2(eigenvectors[1, 1], eigenvectors[0, 1]))  # major axis, from R towards A
    major_is_rl = abs((theta + 90.0) % 180.0 - 90.0) <= 45.0
    ap_axis = eigenvectors[:, 0] if major_is_rl else eigenvectors[:, 1]
    from scipy.spatial import ConvexHull

    return {
        "diameter_ap_mm": _profile_width(crop, pixel, centroid, ap_axis, polygon),
        "diameter_ap_ellipse_mm": float(minor if major_is_rl else major),
        "diameter_rl_mm": float(major if major_is_rl else minor),
        "eccentricity": float(math.sqrt(max(0.0, 1.0 - eigenvalues[0] / eigenvalues[1]))) if eigenvalues[1] > 0 else 0.0,
        # SCT's sign: skimage's orientation on its RPI array, from L towards A (ours from R towards A, negated)
        "orientation_deg": (-theta + 90.0) % 180.0 - 90.0,
        "solidity": float(min(1.0, area / ConvexHull(polygon).volume)),
    }


def _outer_contour(image: np.ndarray) -> np.ndarray:
    """(N, 2) vertices (row, col) of the largest closed 0.5 iso-contour of the bilinear interpolation of a
    zero-bordered image. Marching squares on the image itself would cut each corner of the region with a
    straight chord; on a grid CONTOUR_UPSAMPLING times finer the contour follows the interpolated surface."""
    from scipy.ndimage import map_coordinates
    from skimage.measure import find_contours

    factor = CONTOUR_UPSAMPLING
    fine = [np.arange((n - 1) * factor + 1) / factor for n in image.shape]
    grid = np.meshgrid(*fine, indexing="ij")
    upsampled = map_coordinates(image, grid, order=1)
    contours = find_contours(upsampled, 0.5 - 1e-9)  # a pixel of exactly 0.5 belongs to the region (soft >= 0.5)
    areas = [abs(_shoelace(contour)) for contour in contours]
    return contours[int(np.argmax(areas))][:-1] / factor  # find_contours repeats the first vertex at the end


def _shoelace(points: np.ndarray) -> float:
    """Signed area of a closed contour whose last vertex repeats the first (as find_contours gives it)."""
    x, y = points[:, 0], points[:, 1]
    return 0.5 * float(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]))


def _polygon_moments(polygon: np.ndarray):
    """Area, centroid and covariance (second central moments / area) of the region inside a simple polygon."""
    reference = polygon.mean(axis=0)  # moments about a point near the region: no cancellation
    x, y = (polygon - reference).T
    x1, y1 = np.append(x[1:], x[0]), np.append(y[1:], y[0])
    cross = x * y1 - x1 * y
    area = cross.sum() / 2.0
    mean_x = ((x + x1) * cross).sum() / (6.0 * area)
    mean_y = ((y + y1) * cross).sum() / (6.0 * area)
    xx = ((x * x + x * x1 + x1 * x1) * cross).sum() / (12.0 * area) - mean_x**2
    yy = ((y * y + y * y1 + y1 * y1) * cross).sum() / (12.0 * area) - mean_y**2
    xy = ((x * y1 + 2 * x * y + 2 * x1 * y1 + x1 * y) * cross).sum() / (24.0 * area) - mean_x * mean_y
    return abs(area), reference + np.array([mean_x, mean_y]), np.array([[xx, xy], [xy, yy]])


def _profile_width(crop: np.ndarray, pixel: np.ndarray, centroid: np.ndarray, axis: np.ndarray,
                   polygon: np.ndarray) -> float:
    """Mean soft width (mm) along `axis` of PROFILE_LINES lines across a PROFILE_BAND_MM band through the
    centroid (plane coordinates, mm; `pixel` maps crop pixels to them), each sampled every PROFILE_STEP_MM
    over the region's extent along `axis` and a margin of two pixels (the soft edge)."""
    from scipy.ndimage import map_coordinates

    across = np.array([-axis[1], axis[0]])
    extent = (polygon - centroid) @ axis
    margin = 2.0 * float(np.linalg.norm(pixel, axis=0).max())
    along = np.arange(extent.min() - margin, extent.max() + margin, PROFILE_STEP_MM)
    offsets = (np.arange(PROFILE_LINES) + 0.5) / PROFILE_LINES * PROFILE_BAND_MM - PROFILE_BAND_MM / 2
    points = centroid + offsets[:, None, None] * across + along[None, :, None] * axis  # (lines, samples, 2) mm
    voxels = np.linalg.inv(pixel) @ points.reshape(-1, 2).T  # (2, n) crop pixel coordinates
    values = map_coordinates(crop, voxels, order=1, mode="constant", cval=0.0).reshape(PROFILE_LINES, -1)
    return float(values.sum(axis=1).mean() * PROFILE_STEP_MM)


def slice_level(labels: np.ndarray, weights: np.ndarray) -> Optional[int]:
    """The label carrying most of the slice's cord (mask-weighted), else the most frequent positive label."""
    positive = labels > 0
    if not positive.any():
        return None
    in_cord = positive & (weights > 0)
    chosen = in_cord if in_cord.any() else positive
    totals = np.bincount(labels[chosen].astype(np.int64), weights=weights[chosen] if in_cord.any() else None)
    return int(np.argmax(totals))


def shared_z_range(tables: Sequence[CsaTable]) -> Tuple[float, float]:
    """The z range (mm) that every CSA table of one cord covers, widened by a quarter of a slice: a slice's z is
    its cord centre's, which differs by tenths of a mm at most between images of one grid, so that a sharp cut
    would keep an end slice of one image and drop it from another; a quarter (not a half) stays clear of a grid
    shifted by half a slice."""
    zs = [np.sort(z[np.isfinite(z)]) for z in (table.column("z_mm").astype(float) for table in tables)]
    zs = [z for z in zs if len(z)]
    if not zs:
        raise InputError("no slice with a cord to compare")
    steps = [float(np.median(np.diff(z))) for z in zs if len(z) > 1]
    slack = 0.25 * min(steps) if steps else 0.0
    return max(z[0] for z in zs) - slack, min(z[-1] for z in zs) + slack


def parse_range(text: str, what: str, lowest: int = 0) -> Tuple[int, int]:
    """'2:3' -> (2, 3), '2' -> (2, 2) (levels and slice indices are whole numbers, from `lowest` up); a one-line
    InputError otherwise."""
    parts = text.split(":")
    try:
        values = [int(part) for part in parts]
    except ValueError:
        raise InputError(f"{what} must be a whole number or a range like 2:3, not {text!r}") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or values[0] > values[1]:
        raise InputError(f"{what} must be a number or a range like 2:3 (low:high), not {text!r}")
    if values[0] < lowest:  # a bound below the first slice or level was clipped without a word
        raise InputError(f"{what} counts from {lowest} up{' (C1)' if lowest == 1 else ''}, not {text!r}")
    return values[0], values[1]
