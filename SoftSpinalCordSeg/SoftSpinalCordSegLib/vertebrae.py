"""Automatic vertebral levels: intervertebral discs found along the cord, numbered as SCT numbers them.

Method. The cord segmentation gives a centreline (the soft centre of each axial slice, smoothed). The image is
resampled along it into a straightened sagittal band: depth `BAND_MM` in front of the cord, where the vertebral
bodies and discs lie (behind the CSF in front of the cord), averaged over a few mm left-right, its intensities
replaced by their ranks. Discs are where this band changes along the cord (a bright or dark disc between bodies
and their endplates, whatever the contrast), so the profile is the mean absolute derivative along the cord. It
is matched to the same profile of the PAM50 T2 template (brainstem to conus, discs known; `level_template.py`,
built by tools/build_level_template.py), stretched by 0.75-1.3 and shifted, by normalised cross-correlation; the
cord's area profile (the cervical enlargement) is a second, weaker channel. Each disc is then moved by up to
`REFINE_MM` to where the profile of the band's part nearer the cord (`REFINE_BAND_MM`) around it best matches
the template's. The C2 vertebra (the long body and dens, no disc for 3-4 cm) anchors the numbering: without
C2/C3 and the cord above it in the field of view, or with slices too thick along the cord, no level is given.

Confidence. The margin between the best match and the best one that numbers the discs differently (by one disc
or more). Under `MIN_MARGIN` the numbering is refused: a one-line reason, no level.

Disc numbers follow SCT's label files: disc n lies between vertebra n-1 and vertebra n, so 3 = C2/C3, 4 = C3/C4,
8 = C7/T1 (and 2 = C1/C2, where there is no disc, 1 = the top of C1); vertebra k lies between disc k and k+1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

STEP_MM = 1.0  # sampling along the cord
BAND_MM = (12.0, 30.0)  # depth in front of the cord centre sampled for the discs: the vertebral bodies, behind
# the CSF in front of the cord (up to 10-12 mm deep at C1-C2) and in front of the cord's own edge
WIDTH_MM = 3.0  # half-width left-right averaged
SCALES = np.round(np.arange(0.75, 1.3001, 0.01), 2)  # template arc per image arc (people differ by about 20 %)
REFINE_MM = 4.0  # a disc moves at most this far from where the whole-cord match puts it
REFINE_BAND_MM = (12.0, 24.0)  # each disc is placed on the band's part nearer the cord: discs slant (lordosis,
# kyphosis) and SCT's disc point is the disc's back, next to the cord
REFINE_STIFFNESS = 0.6  # correlation lost per REFINE_MM of change in offset from one disc to the next
REFINE_WINDOW_MM = 8.0  # around each disc, the stretch of profile matched to refine it
AREA_WEIGHT = 0.3  # weight of the cord-area channel against the disc profile
MIN_MARGIN = 0.08  # score margin over the best other numbering below which levels are refused (PAM50 copies: 0.13-0.24)
MAX_STEP_ALONG_CORD_MM = 2.6  # slices thicker than this along the cord blur discs away
MIN_ABOVE_C2C3_MM = 8.0  # the field of view must show this much cord above C2/C3 (the C2 landmark)
MIN_INSIDE = 0.5  # profile points with less of their band inside the image are left out
MIN_COVERED = 0.6  # a match must cover this much of the profile (the rest above the template's top)...
MIN_OVERLAP_MM = 60.0  # ...or, when the cord goes on far above the template's top, this much of it
MIN_LENGTH_MM = 50.0  # a shorter cord segment holds too few discs to number them
SMOOTHING_MM = 20.0  # centreline smoothing, as morphometry


@dataclass
class Centreline:
    """Points every STEP_MM along the cord, from its top (superior end) down: RAS mm, unit tangents, anterior
    unit vectors normal to the cord, and the cord's area in each point's slice (mm², nan where unknown)."""

    points: np.ndarray
    tangents: np.ndarray
    anterior: np.ndarray
    area_mm2: np.ndarray

    def __len__(self) -> int:
        return len(self.points)

    def arc_of(self, position) -> float:
        """Arc length (mm from the top) of the centreline point nearest to a RAS position."""
        distances = np.linalg.norm(self.points - np.asarray(position, dtype=float), axis=1)
        index = int(np.argmin(distances))
        # sub-step: project on the tangent at the nearest point (tangents point down the cord, as arcs grow)
        offset = float((np.asarray(position, dtype=float) - self.points[index]) @ self.tangents[index])
        return float(np.clip(index * STEP_MM + offset, 0.0, (len(self) - 1) * STEP_MM))

    def point_at(self, arc_mm: float, depth_mm: float = 0.0) -> np.ndarray:
        """RAS position at `arc_mm` along the cord, `depth_mm` in front of it (straight on beyond its ends)."""
        end = (len(self) - 1) * STEP_MM
        if arc_mm < 0 or arc_mm > end:
            at = 0 if arc_mm < 0 else len(self) - 1
            beyond = arc_mm if arc_mm < 0 else arc_mm - end
            return self.points[at] + beyond * self.tangents[at] + depth_mm * self.anterior[at]
        index = np.clip(arc_mm / STEP_MM, 0, len(self) - 1)
        low = int(math.floor(index))
        high = min(low + 1, len(self) - 1)
        weight = index - low
        point = (1 - weight) * self.points[low] + weight * self.points[high]
        forward = (1 - weight) * self.anterior[low] + weight * self.anterior[high]
        return point + depth_mm * forward / np.linalg.norm(forward)


@dataclass
class DiscLabelling:
    """Discs found in one image. `discs`: {disc number: RAS position (mm)}, empty when refused; `refusal`: why no
    level can be given (one line), else None; `confidence`: the score margin (see the module docstring)."""

    discs: Dict[int, np.ndarray] = field(default_factory=dict)
    confidence: float = 0.0
    refusal: Optional[str] = None
    centreline: Optional[Centreline] = None
    disc_arcs: Dict[int, float] = field(default_factory=dict)  # mm along the centreline from its top
    all_arcs: Dict[int, float] = field(default_factory=dict)  # every template disc placed by the match, even outside
    half_slice_mm: float = 0.0  # disc points sit this far above the boundary between two vertebrae (SCT)

    @property
    def ok(self) -> bool:
        return self.refusal is None

    def level_points(self) -> Dict[int, np.ndarray]:
        """The discs in view and, beyond them, the next disc above and below where the template puts it (outside
        the image): with these discs.levels_from_discs gives a level to the cord above the first disc in view
        and below the last (C2 above C2/C3)."""
        if not self.ok:
            return {}
        points = dict(self.discs)
        for number in (min(self.discs) - 1, max(self.discs) + 1):
            if number in self.all_arcs and number not in points:
                points[number] = self.centreline.point_at(self.all_arcs[number] - self.half_slice_mm, DISC_DEPTH_MM)
        return points


# ------------------------------------------------------------------------------------------------ centreline
def cord_centreline(probability: np.ndarray, affine: np.ndarray) -> Centreline:
    """The cord's centreline every STEP_MM from top to bottom (RAS), from a soft or binary cord mask."""
    from scipy.interpolate import make_smoothing_spline

    from .morphometry import slice_axis, slice_centres

    affine = np.asarray(affine, dtype=float)
    if not np.any(np.asarray(probability) > 0):
        return Centreline(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0))
    _, centres, sums = slice_centres(probability, affine, with_sums=True)
    keep = sums > 0.2 * np.median(sums)  # the cord's cut ends shift the centre
    centres, sums = centres[keep], sums[keep]
    linear = affine[:3, :3]
    in_plane = [other for other in range(3) if other != slice_axis(affine)]
    pixel_area = float(np.linalg.norm(np.cross(linear[:, in_plane[0]], linear[:, in_plane[1]])))
    areas = sums * pixel_area
    order = np.argsort(-centres[:, 2])
    centres, areas = centres[order], areas[order]
    depth = -centres[:, 2]
    keep = np.concatenate([[True], np.diff(depth) > 1e-6])
    centres, areas, depth = centres[keep], areas[keep], depth[keep]
    if depth.size < 5:
        return Centreline(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0))
    penalty = (SMOOTHING_MM / (2 * math.pi)) ** 4
    fine = np.linspace(depth[0], depth[-1], max(int((depth[-1] - depth[0]) * 4), 2) + 1)
    splines = [make_smoothing_spline(depth, centres[:, column], lam=penalty) for column in range(2)]
    curve = np.column_stack([splines[0](fine), splines[1](fine), -fine])
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(curve, axis=0), axis=1))])
    samples = np.arange(0.0, arc[-1] + 1e-9, STEP_MM)
    points = np.column_stack([np.interp(samples, arc, curve[:, column]) for column in range(3)])
    tangents = np.gradient(points, axis=0)
    tangents /= np.linalg.norm(tangents, axis=1, keepdims=True)
    anterior = np.array([0.0, 1.0, 0.0]) - tangents[:, 1:2] * tangents
    anterior /= np.linalg.norm(anterior, axis=1, keepdims=True)
    area = np.interp(-points[:, 2], depth, areas)
    return Centreline(points, tangents, anterior, area)


def straightened_band(image: np.ndarray, affine: np.ndarray, centreline: Centreline,
                      depths_mm: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """The image resampled along the cord: rows = centreline points, columns = depth in front of the cord,
    averaged over +-WIDTH_MM left-right; and which of these samples lie inside the image (all of their widths)."""
    from scipy.ndimage import map_coordinates

    widths = np.arange(-WIDTH_MM, WIDTH_MM + 1e-9, 1.0)
    lateral = np.cross(centreline.tangents, centreline.anterior)
    positions = (centreline.points[:, None, None, :]
                 + depths_mm[None, :, None, None] * centreline.anterior[:, None, None, :]
                 + widths[None, None, :, None] * lateral[:, None, None, :])
    inverse = np.linalg.inv(np.asarray(affine, dtype=float))
    voxels = positions @ inverse[:3, :3].T + inverse[:3, 3]
    flat = voxels.reshape(-1, 3).T
    values = map_coordinates(np.asarray(image, dtype=np.float32), flat, order=1, mode="nearest")
    shape = np.asarray(image.shape)[:, None]
    inside = np.all((flat >= -0.5) & (flat <= shape - 0.5), axis=0)
    return values.reshape(positions.shape[:3]).mean(axis=2), inside.reshape(positions.shape[:3]).all(axis=2)


def disc_profile(image: np.ndarray, affine: np.ndarray, centreline: Centreline,
                 band_mm: Tuple[float, float] = BAND_MM) -> Tuple[np.ndarray, np.ndarray]:
    """Per centreline point: how much the band in front of the cord changes along the cord (peaks at discs and
    endplates, log of the change over its median), and the fraction of the band inside the image.

    The band's intensities are replaced by their ranks: the profile is the same for any contrast or monotonic
    intensity change (T1w, T2w, inverted, gamma), and no bright structure (CSF, fat) outweighs the endplates.
    Samples outside the image are left out, so a band cut by a small field of view still counts."""
    from scipy.ndimage import gaussian_filter1d
    from scipy.stats import rankdata

    depths = np.arange(band_mm[0], band_mm[1] + 1e-9, 1.0)
    band, inside = straightened_band(image, affine, centreline, depths)
    ranks = np.zeros(band.shape)
    ranks[inside] = rankdata(band[inside]) / max(int(inside.sum()), 1)
    weight = gaussian_filter1d(inside.astype(float), 1.0, axis=0)
    smooth = gaussian_filter1d(ranks, 1.0, axis=0) / np.maximum(weight, 1e-6)
    neighbours = inside & np.roll(inside, 1, axis=0) & np.roll(inside, -1, axis=0)
    fraction = neighbours.mean(axis=1)
    change = (np.abs(np.gradient(smooth, axis=0)) * neighbours).sum(axis=1) / np.maximum(neighbours.sum(axis=1), 1)
    valid = fraction >= MIN_INSIDE
    typical = float(np.median(change[valid])) if valid.any() else 1.0
    change = gaussian_filter1d(np.where(valid, change, typical), 1.5) / (typical or 1.0)
    change = np.log(np.maximum(change, 0.1))  # the skull base and bowel change far more than discs: compress
    return np.where(valid, change, np.nan), fraction


# ------------------------------------------------------------------------------------------------ matching
def _normalised(values: np.ndarray) -> np.ndarray:
    values = values - values.mean(axis=-1, keepdims=True)
    norm = np.linalg.norm(values, axis=-1, keepdims=True)
    return values / np.where(norm > 0, norm, 1.0)


def _scores(profile: np.ndarray, area: np.ndarray, template) -> Tuple[np.ndarray, np.ndarray]:
    """Score of every (scale, shift): image arc s maps to template arc scale * s + shift. Returns the score
    array (scales x shifts) and the shifts (mm)."""
    arcs = np.arange(profile.size) * STEP_MM
    t_arc = np.arange(len(template.PROFILE)) * template.STEP_MM
    t_profile, t_area = np.asarray(template.PROFILE), np.asarray(template.AREA)
    shifts = np.arange(-float(profile.size), t_arc[-1], 1.0)
    image_valid = np.isfinite(profile)
    image_profile = np.where(image_valid, profile, 0.0)
    area_valid = np.isfinite(area) & (area > 0)
    image_area = np.log(np.where(area_valid, area, 1.0))
    t_valid = np.isfinite(t_profile)
    t_area_valid = np.isfinite(t_area) & (t_area > 0)
    scores = np.full((SCALES.size, shifts.size), -np.inf)
    for row, scale in enumerate(SCALES):
        mapped = scale * arcs[None, :] + shifts[:, None]
        nearest = np.clip(np.rint(mapped / template.STEP_MM).astype(int), 0, t_arc.size - 1)
        inside = (mapped >= 0) & (mapped <= t_arc[-1])
        covered = inside & image_valid[None, :] & t_valid[nearest]
        # The template begins at C1, where PAM50's cord mask ends; an image's cord often goes on into the
        # brainstem (by 40-80 mm): what lies above the template's top is not held against a match; the rest must
        # be covered, and the overlap be 60 % of the profile or MIN_OVERLAP_MM.
        below_top = image_valid[None, :] & (mapped >= 0)
        usable = ((covered.sum(axis=1) >= 0.8 * below_top.sum(axis=1))
                  & (covered.sum(axis=1) >= min(MIN_COVERED * image_valid.sum(), MIN_OVERLAP_MM / STEP_MM)))
        if not usable.any():
            continue
        resampled = np.interp(mapped[usable], t_arc, np.where(t_valid, t_profile, 0.0))
        area_covered = inside[usable] & area_valid[None, :] & t_area_valid[nearest[usable]]
        resampled_area = np.log(np.interp(mapped[usable], t_arc, np.where(t_area_valid, t_area, 1.0)))
        scores[row, usable] = (_masked_ncc(image_profile, resampled, covered[usable])
                               + AREA_WEIGHT * _masked_ncc(image_area, resampled_area, area_covered))
    return scores, shifts


def _masked_ncc(fixed: np.ndarray, moving: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Normalised cross-correlation of `fixed` with each row of `moving`, over each row's mask."""
    weight = mask.astype(float)
    count = np.maximum(weight.sum(axis=1, keepdims=True), 1.0)
    fixed_mean = (weight * fixed).sum(axis=1, keepdims=True) / count
    moving_mean = (weight * moving).sum(axis=1, keepdims=True) / count
    a = weight * (fixed - fixed_mean)
    b = weight * (moving - moving_mean)
    denominator = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    return np.where(denominator > 0, (a * b).sum(axis=1) / np.where(denominator > 0, denominator, 1.0), 0.0)


def _placed(template, scale: float, shift: float) -> Dict[int, float]:
    """Image arcs of the template's discs under one match."""
    return {int(number): (float(arc) - shift) / scale for number, arc in template.DISCS.items()}


def _refine(profile: np.ndarray, arcs: Dict[int, float], template, scale: float) -> Dict[int, float]:
    """Each disc in view moved by up to REFINE_MM to where the template's profile around that disc (+-REFINE_WINDOW_MM)
    best correlates with the image's, both of the band REFINE_BAND_MM (vertebrae differ in height from person to
    person). Neighbouring discs move together unless their profiles say otherwise: the offsets are chosen
    jointly, each change of offset from one disc to the next costing REFINE_STIFFNESS per REFINE_MM (a disc
    with two endplates or a blurred one does not jump to a neighbouring edge on its own)."""
    t_arc = np.arange(len(template.PROFILE)) * template.STEP_MM
    t_profile = np.asarray(template.REFINE_PROFILE)
    offsets = np.arange(-REFINE_MM, REFINE_MM + 1e-9, 0.5)
    window = np.arange(-REFINE_WINDOW_MM, REFINE_WINDOW_MM + 1e-9, STEP_MM)
    image_arcs = np.arange(profile.size) * STEP_MM
    numbers = sorted(arcs)
    table = np.full((len(numbers), offsets.size), -np.inf)
    for row, number in enumerate(numbers):
        arc = arcs[number]
        reference = np.interp(float(template.DISCS[number]) + scale * window, t_arc, np.nan_to_num(t_profile))
        candidates = arc + offsets[:, None] + window[None, :]
        nearest = np.clip(np.rint(candidates / STEP_MM).astype(int), 0, profile.size - 1)
        covered = (candidates >= 0) & (candidates <= image_arcs[-1]) & np.isfinite(profile[nearest])
        sampled = np.interp(candidates, image_arcs, np.where(np.isfinite(profile), profile, 0.0))
        table[row] = _masked_ncc(reference, sampled, covered)
        table[row, covered.sum(axis=1) < 0.6 * window.size] = -np.inf
    chosen = _smoothest_best_path(table, offsets)
    refined = {number: float(arcs[number] + (offsets[index] if index is not None else 0.0))
               for number, index in zip(numbers, chosen)}
    for upper, lower in zip(numbers[:-1], numbers[1:]):
        if refined[lower] <= refined[upper]:
            refined[lower] = arcs[lower]
    return refined


def _smoothest_best_path(table: np.ndarray, offsets: np.ndarray) -> List[Optional[int]]:
    """Per row (disc) the column (offset) maximising the summed scores less REFINE_STIFFNESS per REFINE_MM of change
    between consecutive rows (dynamic programming); None for a row with no score (out of view)."""
    penalty = REFINE_STIFFNESS / REFINE_MM * np.abs(offsets[:, None] - offsets[None, :])  # from column, to column
    finite = np.isfinite(table).any(axis=1)
    scores = np.where(np.isfinite(table), table, -1e3)
    total = scores[0].copy()
    back = np.zeros(table.shape, dtype=int)
    for row in range(1, len(table)):
        moves = total[:, None] - (penalty if finite[row] and finite[row - 1] else 0.0)
        back[row] = np.argmax(moves, axis=0)
        total = moves[back[row], np.arange(offsets.size)] + scores[row]
    path = [int(np.argmax(total))]
    for row in range(len(table) - 1, 0, -1):
        path.append(int(back[row, path[-1]]))
    path.reverse()
    return [index if finite[row] else None for row, index in enumerate(path)]


def detect_discs(image: np.ndarray, affine: np.ndarray, probability: np.ndarray, template=None) -> DiscLabelling:
    """Find and number the discs of one image from its cord segmentation (soft or binary, the image's grid)."""
    if template is None:
        from . import level_template as template
    affine = np.asarray(affine, dtype=float)
    step = _step_along_cord(affine)
    if step > MAX_STEP_ALONG_CORD_MM:
        return DiscLabelling(refusal=f"slices {step:.1f} mm apart along the cord are too thick to see the discs "
                                     f"(at most {MAX_STEP_ALONG_CORD_MM:g} mm: a sagittal or 3D image is needed)")
    centreline = cord_centreline(probability, affine)
    length = (len(centreline) - 1) * STEP_MM
    if length < MIN_LENGTH_MM:
        return DiscLabelling(refusal=f"the cord found is {max(length, 0):.0f} mm long; at least {MIN_LENGTH_MM:g} mm "
                                     "is needed to number the discs", centreline=centreline)
    profile, inside = disc_profile(image, affine, centreline)
    if np.median(inside) < MIN_INSIDE:
        return DiscLabelling(refusal="the field of view does not reach far enough in front of the cord to see "
                                     "the vertebrae", centreline=centreline)
    valid = np.flatnonzero(np.isfinite(profile))
    view = (valid[0] * STEP_MM, valid[-1] * STEP_MM)  # the arcs where the image shows the vertebrae
    scores, shifts = _scores(profile, centreline.area_mm2, template)
    if not np.isfinite(scores).any():
        return DiscLabelling(refusal="the cord does not match the template's spine", centreline=centreline)
    best_row, best_column = np.unravel_index(int(np.argmax(scores)), scores.shape)
    best_scale, best_shift = float(SCALES[best_row]), float(shifts[best_column])
    placed = _placed(template, best_scale, best_shift)
    margin = float(scores[best_row, best_column] - _best_other_numbering(scores, shifts, template, placed, view))
    labelling = DiscLabelling(confidence=margin, centreline=centreline, half_slice_mm=step / 2)
    top_disc = placed.get(3)
    if top_disc is None or top_disc < view[0] + MIN_ABOVE_C2C3_MM or top_disc > view[1]:
        labelling.refusal = ("the field of view does not show C2 and the C2/C3 disc, the landmark that numbers "
                             "the vertebrae; place the discs by hand")
        return labelling
    if margin < MIN_MARGIN:
        labelling.refusal = (f"the disc numbering is uncertain (confidence {margin:.3f} < {MIN_MARGIN}); "
                             "place the discs by hand")
        return labelling
    in_view = {number: arc for number, arc in placed.items() if view[0] <= arc <= view[1]}
    near, _ = disc_profile(image, affine, centreline, REFINE_BAND_MM)
    refined = _refine(near, {n: arc for n, arc in in_view.items() if n >= 3}, template, best_scale)
    if 2 in in_view and 3 in refined:  # C1/C2 is no disc (nothing to refine on): it keeps its place above C2/C3
        refined[2] = in_view[2] + refined[3] - in_view[3]
    beyond = {int(number): (float(arc) - best_shift) / best_scale for number, arc in template.BEYOND.items()}
    labelling.all_arcs = {**beyond, **placed, **refined}
    labelling.disc_arcs = refined
    # SCT puts a disc in the lowest slice of the vertebra above it (discs.levels_from_discs gives that slice to
    # that vertebra): half a slice above the boundary between the two vertebrae.
    labelling.discs = {number: centreline.point_at(arc - labelling.half_slice_mm, DISC_DEPTH_MM)
                       for number, arc in refined.items()}
    return labelling


DISC_DEPTH_MM = 7.0  # disc points are placed this far in front of the cord centre (the back of the disc)


def _best_other_numbering(scores: np.ndarray, shifts: np.ndarray, template, best: Dict[int, float],
                          view: Tuple[float, float]) -> float:
    """Best score among matches that put some disc in view more than half a vertebra from where the best one
    puts it (they number the discs differently)."""
    numbers = [number for number, arc in best.items() if view[0] <= arc <= view[1]]
    if not numbers:
        return -np.inf
    best_arcs = np.array([best[number] for number in numbers])
    spacing = np.median(np.diff(np.sort(np.array(list(best.values())))))
    template_arcs = np.array([template.DISCS[number] for number in numbers], dtype=float)
    other = -np.inf
    for row, scale in enumerate(SCALES):
        finite = np.isfinite(scores[row])
        if not finite.any():
            continue
        arcs = (template_arcs[None, :] - shifts[finite][:, None]) / scale
        moved = np.abs(arcs - best_arcs[None, :]).max(axis=1) > 0.5 * spacing
        if moved.any():
            other = max(other, float(scores[row, finite][moved].max()))
    return other


def _step_along_cord(affine: np.ndarray) -> float:
    """Distance between samples along S: the S extent of one voxel step of the axis closest to S."""
    linear = np.asarray(affine, dtype=float)[:3, :3]
    axis = int(np.argmax(np.abs(linear[2, :]) / np.linalg.norm(linear, axis=0)))
    return float(np.linalg.norm(linear[:, axis]))


# ------------------------------------------------------------------------------------------------ outputs
def disc_label_image(labelling: DiscLabelling, shape, affine: np.ndarray) -> np.ndarray:
    """SCT-style disc label volume: one voxel per disc, its value the disc number (3 = C2/C3)."""
    labels = np.zeros(shape, dtype=np.uint8)
    inverse = np.linalg.inv(np.asarray(affine, dtype=float))
    for number, position in labelling.discs.items():
        voxel = np.rint(inverse[:3, :3] @ position + inverse[:3, 3]).astype(int)
        voxel = np.clip(voxel, 0, np.asarray(shape) - 1)
        labels[tuple(voxel)] = number
    return labels


def disc_name(number: int) -> str:
    """3 -> 'C2/C3', 8 -> 'C7/T1' (disc n between vertebrae n-1 and n)."""
    from .plot import level_name

    return f"{level_name(number - 1)}/{level_name(number)}"


def disc_arcs_from_level_map(levels: np.ndarray, affine: np.ndarray, centreline: Centreline) -> Dict[int, float]:
    """Disc arcs where a level map (1=C1, 2=C2, ...) steps from vertebra k to k+1 along the centreline (disc
    k+1): the known truth of a labelled image, and the template's discs."""
    inverse = np.linalg.inv(np.asarray(affine, dtype=float))
    voxels = np.rint(centreline.points @ inverse[:3, :3].T + inverse[:3, 3]).astype(int)
    inside = np.all((voxels >= 0) & (voxels < np.asarray(levels.shape)), axis=1)
    found = np.zeros(len(centreline), dtype=int)
    found[inside] = np.asarray(levels)[tuple(voxels[inside].T)]
    arcs: Dict[int, float] = {}
    labelled = np.flatnonzero(found > 0)
    for current, following in zip(labelled[:-1], labelled[1:]):
        if found[following] == found[current] + 1:
            arcs[int(found[following])] = 0.5 * (current + following) * STEP_MM
    return arcs


def describe(labelling: DiscLabelling) -> str:
    """One line: the discs found and the confidence, or why no level is given."""
    if not labelling.ok:
        return f"no vertebral levels: {labelling.refusal}"
    names = [disc_name(number) for number in sorted(labelling.discs)]
    return (f"vertebral levels from {len(names)} discs found automatically ({names[0]} to {names[-1]}), "
            f"confidence {labelling.confidence:.3f}")


def levels_qc_picture(image: np.ndarray, affine: np.ndarray, labelling: DiscLabelling, path, title: str = "") -> None:
    """Sagittal PNG through the cord (RAS: A right, S up) with the cord centreline and the numbered discs."""
    from matplotlib.figure import Figure
    from scipy.ndimage import map_coordinates

    from .io import atomic_path

    centreline = labelling.centreline
    affine = np.asarray(affine, dtype=float)
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in image.shape], indexing="ij")).reshape(3, -1).T
    world = corners @ affine[:3, :3].T + affine[:3, 3]
    has_cord = centreline is not None and len(centreline)
    x = float(np.median(centreline.points[:, 0])) if has_cord else float(world[:, 0].mean())
    a_range = (world[:, 1].min(), world[:, 1].max())
    s_range = (world[:, 2].min(), world[:, 2].max())
    step = 0.5
    a_values = np.arange(a_range[0], a_range[1] + 1e-9, step)
    s_values = np.arange(s_range[0], s_range[1] + 1e-9, step)
    grid_a, grid_s = np.meshgrid(a_values, s_values)
    points = np.stack([np.full(grid_a.shape, x), grid_a, grid_s], axis=-1)
    inverse = np.linalg.inv(affine)
    voxels = points @ inverse[:3, :3].T + inverse[:3, 3]
    plane = map_coordinates(np.asarray(image, dtype=np.float32), voxels.reshape(-1, 3).T, order=1,
                            mode="constant", cval=0.0).reshape(grid_a.shape)
    height = 8.0
    width = max(3.0, height * (a_range[1] - a_range[0]) / max(s_range[1] - s_range[0], 1.0))
    figure = Figure(figsize=(width + 1.0, height), dpi=100)
    axes = figure.add_subplot(1, 1, 1)
    low, high = np.percentile(plane, [1, 99])
    axes.imshow(plane, cmap="gray", origin="lower", vmin=low, vmax=high,
                extent=(a_range[0], a_range[1], s_range[0], s_range[1]))
    if has_cord:
        axes.plot(centreline.points[:, 1], centreline.points[:, 2], color="cyan", linewidth=0.6)
    for number, position in sorted(labelling.discs.items()):
        axes.plot(position[1], position[2], "o", color="yellow", markersize=4)
        axes.text(position[1] + 4, position[2], disc_name(number), color="yellow", fontsize="small", va="center")
    axes.set_xlabel("A (mm)")
    axes.set_ylabel("S (mm)")
    note = describe(labelling)
    axes.set_title((title + "\n" if title else "") + note, fontsize="small", wrap=True)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(str(temporary), format="png")
