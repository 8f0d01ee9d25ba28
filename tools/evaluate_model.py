"""Quality bars of the shipped model on the real images in ../shared/data (prints a Markdown report).

    python tools/evaluate_model.py [--data ../shared/data] [--qc-dir docs/qc] [--weights-dir DIR] [--window-mm 64]
    python tools/evaluate_model.py --people-only     # the per-person validation (tools/validation_set.py) alone

- first, the validation set of tools/validation_set.py: per image and per person (Dice, soft Dice, CSA ratio
  to the manual mask), the mean over people, scan-rescan, MT-on against MT-off, and the known-truth lesion,
  squeeze, atrophy, slice-thickness, tilt, noise and bias-field checks;

- unf01 T1w, T2star, T2w (validation subject, never trained on): Dice (soft >= 0.5 vs manual), mean
  angle-corrected CSA vs the manual mask's, spread of mean CSA across the three contrasts;
- the area inside the half-intensity cord/CSF outline over the manual mask's (where raters draw);
- unf01 as if acquired with thicker voxels along one in-plane axis (2-3 mm) or blurred in-plane: CSA over
  the manual mask's;
- the tutorial's single subject in three contrasts (MT1, MT0, mean DWI): mean CSA over their shared S range;
- sub-05 MT-on: Dice and CSA, marked "trained on" unless model.json says no real image was; its manual
  mask leaves out the first and last of the 22 slices, where the cord continues, so Dice is also given
  over the slices the rater labelled;
- unf01 with every window (inference.CROP_MM) moved up to 2 mm from where the locating pass put it: how much the mean CSA
  depends on where the windows fall;
- unf01 with its intensities inverted, gamma-remapped (0.5, 2) or with 5 % noise: Dice and CSA on other contrasts;
- unf01 on its acquired slices only: its images are linear interpolations along z of slices 5 mm apart;
- every other tutorial image (no manual mask): slices with cord, CSA range, how much probability the
  largest-component clean-up removed (mass outside the canal), the slices whose CSA breaks from their
  neighbours' (`CsaTable.suspect_slices`), and a QC mosaic to look at; marked
  "trained on" where model.json lists it (self-training on pseudo-labels).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "SoftSpinalCordSeg"))

from SoftSpinalCordSegLib import inference  # noqa: E402
from SoftSpinalCordSegLib.io import load_mask, load_volume  # noqa: E402
from SoftSpinalCordSegLib.model import DIVISOR  # noqa: E402
from SoftSpinalCordSegLib.morphometry import compute_csa, dice, slice_axis  # noqa: E402
from SoftSpinalCordSegLib.qc import qc_mosaic  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import validation_set  # noqa: E402

LABELLED = [
    ("unf01 T1w", "real/unf01/sub-unf01_T1w.nii.gz", "real/unf01/sub-unf01_T1w_seg-manual.nii.gz"),
    ("unf01 T2star", "real/unf01/sub-unf01_T2star.nii.gz", "real/unf01/sub-unf01_T2star_seg-manual.nii.gz"),
    ("unf01 T2w", "real/unf01/sub-unf01_T2w.nii.gz", "real/unf01/sub-unf01_T2w_seg-manual.nii.gz"),
    ("sub-05 MT-on", "real/tutorial/sub-05_acq-MTon_MTS.nii.gz", "real/tutorial/sub-05_acq-MTon_MTS_seg.nii.gz"),
]
SIZE_FACTORS = (0.85, 1.15)  # in-plane magnifications: cord areas 0.72x to 1.32x, the range across adults
WINDOW_SHIFTS_MM = range(-2, 3)  # each in-plane axis: 25 placements of the windows
SINGLE_SUBJECT = ("MT1", "MT0", "DWI (mean)")  # one subject, one session (SCT tutorial single_subject)
UNLABELLED = [
    ("sub-01 MT-off", "real/tutorial/sub-01_acq-MToff_MTS.nii.gz", None),
    ("sub-01 MT-on", "real/tutorial/sub-01_acq-MTon_MTS.nii.gz", None),
    ("sub-03 MT-off", "real/tutorial/sub-03_acq-MToff_MTS.nii.gz", None),
    ("sub-03 MT-on", "real/tutorial/sub-03_acq-MTon_MTS.nii.gz", None),
    ("sub-05 MT-off", "real/tutorial/sub-05_acq-MToff_MTS.nii.gz", None),
    ("MT0", "real/tutorial/mt0.nii.gz", None),
    ("MT1", "real/tutorial/mt1.nii.gz", None),
    ("DWI (mean)", "real/tutorial/dmri.nii.gz", "mean"),
    ("MS T2w axial", "real/tutorial/t2_ms.nii.gz", None),
    ("lumbar T2w sagittal", "real/tutorial/t2_lumbar.nii.gz", None),
]


def load_image(path, how):
    volume = load_volume(path, volume_index=0) if how == "mean" else load_volume(path)
    if how == "mean":  # the mean over the 4th dimension, as a user would pass it
        import nibabel as nib

        volume.array = np.asanyarray(nib.load(path).dataobj).astype(np.float32).mean(axis=3)
    return volume


def half_intensity_ratio(image, manual, axis, upsample=4):
    """Area of the cord outlined at half the cord/CSF intensity step, over the manual mask's area (model-free).

    Per slice (4x upsampled): cord level = median inside the eroded mask, CSF level = upper quartile of a ring
    0.5-3 px outside it; the outline is the blob beyond the half-way level that overlaps the mask most.
    """
    from scipy import ndimage

    image, manual = np.moveaxis(image, axis, -1), np.moveaxis(manual, axis, -1)
    outlined, drawn = 0.0, 0.0
    for k in range(image.shape[-1]):
        if manual[..., k].sum() < 20:
            continue
        intensity = ndimage.zoom(image[..., k].astype(float), upsample, order=1)
        mask = ndimage.zoom(manual[..., k].astype(float), upsample, order=1) > 0.5
        core = ndimage.binary_erosion(mask, iterations=2 * upsample)
        ring = ndimage.binary_dilation(mask, iterations=3 * upsample) & ~ndimage.binary_dilation(mask, iterations=upsample // 2)
        if np.median(intensity[core]) > np.median(intensity[ring]):
            intensity = -intensity  # cord brighter than CSF (T1w): make the cord the dark side
        level = (np.median(intensity[core]) + np.percentile(intensity[ring], 75)) / 2
        blobs, n = ndimage.label((intensity < level) & ndimage.binary_dilation(mask, iterations=3 * upsample))
        if n:
            best = 1 + int(np.argmax(ndimage.sum(mask, blobs, index=np.arange(1, n + 1))))
            outlined += ndimage.binary_fill_holes(blobs == best).sum() / upsample**2
            drawn += manual[..., k].sum()
    return outlined / max(drawn, 1)


def widened_voxels(affine, axis, factor):
    """The affine of a grid whose voxels are `factor` times as wide along `axis`, starting at the same edge."""
    affine = affine.copy()
    affine[:3, 3] += affine[:3, axis] * (factor - 1) / 2  # the first new voxel's centre
    affine[:3, axis] *= factor
    return affine


def coarsen(volume, axis, factor):
    """The volume as acquired with `factor`-times thicker voxels along `axis` (box slice profile)."""
    return validation_set.thickened(volume.array, factor, axis), widened_voxels(volume.affine, axis, factor)


def refine(volume, spacing_mm):
    """The volume interpolated (cubic) onto a finer in-plane grid of the same extent, as 0.5-0.8 mm
    acquisitions come: what is measured is the resampling to the network's 1 mm grid and back."""
    from scipy import ndimage

    affine = volume.affine
    zoom = [1.0 if a == slice_axis(affine) else np.linalg.norm(affine[:3, a]) / spacing_mm for a in range(3)]
    fine = ndimage.zoom(volume.array.astype(np.float32), zoom, order=3, mode="nearest", grid_mode=True)
    for a, z in enumerate(zoom):
        affine = widened_voxels(affine, a, 1 / z)
    return fine, affine


def coarse_ratios(volume, csa_manual):
    """Mean CSA over the manual mask's of the volume averaged to 2 and 3 mm along LR and to 2 mm along AP,
    blurred in-plane by a 2 mm (FWHM) Gaussian, as EPI or low-resolution acquisitions are, and interpolated
    onto 0.5 and 0.8 mm in-plane grids."""
    import nibabel as nib
    from scipy import ndimage

    world_axis = nib.orientations.io_orientation(volume.affine)[:, 0]  # array axis -> 0 LR, 1 AP, 2 SI
    lr_axis, ap_axis = (int(np.flatnonzero(world_axis == w)[0]) for w in (0, 1))
    ratios = []
    for axis, factor in ((lr_axis, 2), (lr_axis, 3), (ap_axis, 2)):
        array, affine = coarsen(volume, axis, factor)
        ratios.append(mean_csa(inference.segment_image(array, affine), affine)[0] / csa_manual)
    sigma_mm = 2.0 / 2.355
    sigma = [0.0 if a == slice_axis(volume.affine) else sigma_mm / np.linalg.norm(volume.affine[:3, a]) for a in range(3)]
    blurred = ndimage.gaussian_filter(volume.array.astype(np.float32), sigma)
    ratios.append(mean_csa(inference.segment_image(blurred, volume.affine), volume.affine)[0] / csa_manual)
    for spacing in (0.5, 0.8):
        array, affine = refine(volume, spacing)
        ratios.append(mean_csa(inference.segment_image(array, affine), affine)[0] / csa_manual)
    return ratios


INTENSITY_REMAPS = ("inverted", "gamma 0.5", "gamma 2", "noise 5 %")


def remapped_scores(volume, manual, csa_manual):
    """(Dice, mean CSA / manual) of the volume with its intensities remapped: another contrast of the same
    anatomy. The intensities are first scaled to [0, 1] between their 0.5 and 99.5 percentiles."""
    low, high = np.percentile(volume.array, [0.5, 99.5])
    scaled = np.clip((volume.array.astype(np.float32) - low) / (high - low), 0, 1)
    noise = np.random.default_rng(0).normal(0, 0.05, scaled.shape).astype(np.float32)
    scores = []
    for image in (1 - scaled, scaled ** 0.5, scaled ** 2, scaled + noise):
        prob = inference.segment_image(image, volume.affine)
        scores.append((dice(prob >= 0.5, manual), mean_csa(prob, volume.affine)[0] / csa_manual))
    return scores


def magnify_slices(array, factor, centre, axis, order):
    """Each slice along `axis` magnified `factor` times in-plane about `centre` (the voxel size kept): a
    bigger or smaller subject, canal and neck included."""
    from scipy import ndimage

    moved = np.moveaxis(array.astype(np.float32), axis, -1)
    shrink = np.eye(2) / factor
    offset = centre - shrink @ centre
    out = np.stack([ndimage.affine_transform(moved[..., k], shrink, offset, order=order, mode="nearest")
                    for k in range(moved.shape[-1])], -1)
    return np.moveaxis(out, -1, axis)


def size_ratios(volume, manual, factors=SIZE_FACTORS):
    """Mean CSA over the manual mask's, both magnified by each factor, and how much of the true change in
    area between the two factors the model measures (1: CSA follows the cord's size)."""
    from scipy import ndimage

    axis = slice_axis(volume.affine)
    in_plane = [a for a in range(3) if a != axis]
    centre = np.array(ndimage.center_of_mass(manual))[in_plane]
    model, truth = [], []
    for factor in factors:
        image = magnify_slices(volume.array, factor, centre, axis, order=3)
        mask = magnify_slices(manual.astype(np.float32), factor, centre, axis, order=1)
        model.append(mean_csa(inference.segment_image(image, volume.affine), volume.affine)[0])
        truth.append(mean_csa(mask, volume.affine)[0])
    ratios = [m / t for m, t in zip(model, truth)]
    return ratios, (model[-1] - model[0]) / (truth[-1] - truth[0])


@contextlib.contextmanager
def windows_moved(dx, dy):
    """Every window of the two-pass inference moved by (dx, dy) 1 mm pixels from where the locating pass put it."""
    locate = inference.locate_cord

    def moved(*args):
        centres = locate(*args)
        return None if centres is None else np.round(centres) + (dx, dy)

    inference.locate_cord = moved
    try:
        yield
    finally:
        inference.locate_cord = locate


def placement_ratios(volume, csa_manual):
    """Mean CSA over the manual mask's with the windows moved by every (dx, dy) of WINDOW_SHIFTS_MM."""
    ratios = []
    for dx in WINDOW_SHIFTS_MM:
        for dy in WINDOW_SHIFTS_MM:
            with windows_moved(dx, dy):
                ratios.append(mean_csa(inference.segment_image(volume.array, volume.affine), volume.affine)[0] / csa_manual)
    return np.array(ratios)


EDGE_DIRECTIONS = {"R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1)}  # RAS axis, sign


def edge_offsets(prob, manual, affine):
    """Where the model's outline lies against the manual one, per direction (mm, + outside): along the
    rays from the manual mask's centre on each slice, the soft mask's extent minus the manual mask's."""
    prob, spacing, _ = inference.canonical_view(prob, affine)
    manual, _, _ = inference.canonical_view(manual.astype(np.float32), affine)
    offsets = {d: [] for d in EDGE_DIRECTIONS}
    for k in range(manual.shape[2]):
        if manual[..., k].sum() < 10:
            continue
        centre = np.argwhere(manual[..., k] > 0.5).mean(axis=0).round().astype(int)
        for direction, (axis, sign) in EDGE_DIRECTIONS.items():
            ray = [slice(None) if a == axis else int(centre[a]) for a in range(2)] + [k]
            beyond = (np.arange(manual.shape[axis]) - centre[axis]) * sign >= 0
            difference = prob[tuple(ray)][beyond].sum() - manual[tuple(ray)][beyond].sum()
            offsets[direction].append(difference * spacing[axis])
    return {d: float(np.mean(v)) for d, v in offsets.items()}


def mean_csa(probability, affine):
    table = compute_csa(probability, affine)
    csa = table.column("csa_mm2").astype(float)
    return float(np.nanmean(csa)) if csa.size else float("nan"), table


def acquired_slices(array, axis):
    """Indices of the slices that are not linear interpolations of their neighbours along axis: the ends and
    every bend of the intensity profile (unf01's images were resampled to 1 mm from slices 5 mm apart)."""
    other = tuple(a for a in range(3) if a != axis)
    bends = np.abs(np.diff(array.astype(np.float64), 2, axis=axis)).mean(axis=other) > 1e-3 * array.std()
    return np.concatenate([[0], np.flatnonzero(bends) + 1, [array.shape[axis] - 1]])


def mean_csa_on(table, slices):
    """Mean CSA of a compute_csa table over the given slice indices only."""
    keep = np.isin(table.column("slice"), slices)
    return float(np.nanmean(table.column("csa_mm2").astype(float)[keep]))


def segment(volume):
    start = time.perf_counter()
    raw = inference.segment_image(volume.array, volume.affine, largest_component=False)
    seconds = time.perf_counter() - start
    return raw, inference.keep_largest_component_in_grid(raw, volume.affine), seconds


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.environ.get("SOFTSEG_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data")))
    p.add_argument("--qc-dir", help="write a QC mosaic per image here")
    p.add_argument("--weights-dir", help="evaluate the weights in this folder instead of the shipped ones")
    p.add_argument("--people-only", action="store_true", help="print the per-person validation and stop")
    p.add_argument("--window-mm", type=int, default=inference.CROP_MM,
                   help="side of the second pass's windows (an experiment: the network was trained on 64 mm ones)")
    args = p.parse_args(argv)
    if args.weights_dir:
        os.environ["SOFTSEG_MODEL_DIR"] = args.weights_dir
    if args.window_mm % DIVISOR:
        p.error(f"--window-mm must be a multiple of {DIVISOR} (the network pools four times)")
    inference.CROP_MM = args.window_mm  # this process only evaluates
    data = Path(args.data)
    if args.qc_dir:
        Path(args.qc_dir).mkdir(parents=True, exist_ok=True)

    rows, person_rows, rescan_rows = validation_set.evaluate(data)
    validation_set.print_report(rows, person_rows, rescan_rows)
    validation_set.consistency_report(data, rows)
    validation_set.known_truth_reports(data)
    if args.people_only:
        return 0
    print("\nunf01 and sub-05 in detail\n")
    print("| image | Dice | Dice on the rater's slices | mean CSA model / manual (mm²) | ratio | half-intensity outline / manual | seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    unf01, coarse_rows, size_rows, edge_rows, placement_rows, acquired_rows, remap_rows = [], [], [], [], [], [], []
    seen = inference.model_info().get("real_training_images")  # absent from older model.json: trained on
    for name, image_path, mask_path in LABELLED:
        if name.startswith("sub-05"):
            name += " (trained on)" if seen is None or validation_set.trained_on(image_path, seen) else " (never trained on)"
        volume = load_volume(data / image_path)
        manual = load_mask(data / mask_path, volume).array >= 0.5
        _, prob, seconds = segment(volume)
        pred = prob >= 0.5
        overlap = dice(pred, manual)
        axis = slice_axis(volume.affine)
        rated = manual.any(axis=tuple(a for a in range(3) if a != axis))
        dice_rated = dice(np.compress(rated, pred, axis), np.compress(rated, manual, axis))
        csa_model, model_table = mean_csa(prob, volume.affine)
        csa_manual, manual_table = mean_csa(manual.astype(np.float32), volume.affine)
        if name.startswith("unf01"):
            unf01.append(csa_model)
            coarse_rows.append((name, [csa_model / csa_manual] + coarse_ratios(volume, csa_manual)))
            remap_rows.append((name, remapped_scores(volume, manual, csa_manual)))
            (smaller, bigger), slope = size_ratios(volume, manual)
            size_rows.append((name, [smaller, csa_model / csa_manual, bigger], slope))
            edge_rows.append((name, edge_offsets(prob, manual, volume.affine)))
            placement_rows.append((name, csa_model / csa_manual, placement_ratios(volume, csa_manual)))
            knots = acquired_slices(volume.array, axis)
            on_knots = mean_csa_on(model_table, knots), mean_csa_on(manual_table, knots)
            acquired_rows.append((name, knots, dice(np.take(pred, knots, axis), np.take(manual, knots, axis)), *on_knots))
        outline = half_intensity_ratio(volume.array, manual, axis)
        print(f"| {name} | {overlap:.3f} | {dice_rated:.3f} | {csa_model:.1f} / {csa_manual:.1f} | {csa_model / csa_manual:.3f} | {outline:.2f} | {seconds:.1f} |")
        if args.qc_dir:
            qc_mosaic(volume.array, prob, volume.affine, Path(args.qc_dir) / f"{slug(name)}.png", title=name)
    print(f"\nSD of mean CSA across unf01 T1w/T2star/T2w: {np.std(unf01, ddof=1):.2f} mm² (means {', '.join(f'{c:.1f}' for c in unf01)})\n")

    print("unf01 on other grids (voxels averaged along one in-plane axis, the slices blurred, or interpolated onto a finer "
          "in-plane grid): mean CSA / manual")
    print("\n| image | 1 mm | LR 2 mm | LR 3 mm (sagittal slabs) | AP 2 mm | blurred, 2 mm FWHM | 0.5 mm grid | 0.8 mm grid |"
          "\n| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, ratios in coarse_rows:
        print(f"| {name} | " + " | ".join(f"{r:.3f}" for r in ratios) + " |")
    print()

    print("unf01 with its intensities remapped (another contrast of the same anatomy): Dice, mean CSA / manual")
    print("\n| image | " + " | ".join(INTENSITY_REMAPS) + " |\n|" + " --- |" * (len(INTENSITY_REMAPS) + 1))
    for name, scores in remap_rows:
        print(f"| {name} | " + " | ".join(f"{overlap:.3f}, {ratio:.3f}" for overlap, ratio in scores) + " |")
    print()

    print("unf01 magnified in-plane about the cord (a smaller or bigger subject): mean CSA / the magnified manual mask's, "
          f"and the share of the true change in area from x{SIZE_FACTORS[0]} to x{SIZE_FACTORS[1]} that the model measures "
          "(1 when CSA follows size)")
    print(f"\n| image | x{SIZE_FACTORS[0]} | x1.0 | x{SIZE_FACTORS[1]} | measured / true change |\n|" + " --- |" * 5)
    for name, ratios, slope in size_rows:
        print(f"| {name} | " + " | ".join(f"{r:.3f}" for r in ratios) + f" | {slope:.2f} |")
    print()

    span = f"{WINDOW_SHIFTS_MM[0]} to +{WINDOW_SHIFTS_MM[-1]}"
    print(f"unf01 with the {inference.CROP_MM} mm windows moved {span} mm along each in-plane axis ({len(WINDOW_SHIFTS_MM) ** 2} "
          "placements): mean CSA / manual")
    print("\n| image | where the locating pass puts them | min | mean | max | SD |\n|" + " --- |" * 6)
    for name, default, ratios in placement_rows:
        print(f"| {name} | {default:.3f} | {ratios.min():.3f} | {ratios.mean():.3f} | {ratios.max():.3f} | {ratios.std():.3f} |")
    print()

    print("unf01 on its acquired slices only (the others are linear interpolations along z between them)")
    print("\n| image | slices | Dice | mean CSA model / manual (mm²) | ratio |\n|" + " --- |" * 5)
    for name, knots, overlap, csa_model, csa_manual in acquired_rows:
        print(f"| {name} | {' '.join(map(str, knots))} | {overlap:.3f} | {csa_model:.1f} / {csa_manual:.1f} | {csa_model / csa_manual:.3f} |")
    print(f"\nSD of mean CSA across unf01 T1w/T2star/T2w on those slices: {np.std([r[3] for r in acquired_rows], ddof=1):.2f} mm²\n")

    print("Where the model's outline lies against the manual one (mm, + outside), along the rays from the manual "
          "mask's centre, mean over slices")
    print("\n| image | " + " | ".join(EDGE_DIRECTIONS) + " |\n|" + " --- |" * (len(EDGE_DIRECTIONS) + 1))
    for name, offsets in edge_rows:
        print(f"| {name} | " + " | ".join(f"{offsets[d]:+.2f}" for d in EDGE_DIRECTIONS) + " |")
    print()

    print("| image | slices with cord / total | CSA median [min, max] (mm²) | probability removed by clean-up | components (p ≥ 0.5) | slices to check | seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    from scipy import ndimage

    single_subject, single_subject_seen = {}, False
    for name, image_path, how in UNLABELLED:
        seen_here = bool(seen) and validation_set.trained_on(image_path, seen)  # self-training: pseudo-labels, no manual mask
        single_subject_seen |= seen_here and name in SINGLE_SUBJECT
        volume = load_image(data / image_path, how)
        raw, prob, seconds = segment(volume)
        _, table = mean_csa(prob, volume.affine)
        if name in SINGLE_SUBJECT:
            single_subject[name] = table
        csa = table.column("csa_mm2").astype(float)
        n_total = volume.array.shape[slice_axis(volume.affine)]
        with_cord = int((csa >= 10).sum())
        removed = 1 - prob.sum() / max(raw.sum(), 1e-6)
        components = ndimage.label(raw >= 0.5, structure=np.ones((3, 3, 3)))[1]
        stats = f"{np.median(csa):.1f} [{csa.min():.1f}, {csa.max():.1f}]" if csa.size else "none"
        print(f"| {name}{' (trained on)' if seen_here else ''} | {with_cord} / {n_total} | {stats} | {removed:.1%} | {components} | {' '.join(map(str, table.suspect_slices())) or '-'} | {seconds:.1f} |")
        if args.qc_dir:
            qc_mosaic(volume.array, prob, volume.affine, Path(args.qc_dir) / f"{slug(name)}.png", title=name)
    low, high, means = validation_set.means_over_shared_range(single_subject)  # one cord, three contrasts
    print(f"\nOne subject, three contrasts (tutorial single_subject), mean CSA over S {low:.0f} to {high:.0f} mm: "
          + ", ".join(f"{name} {csa:.1f} mm²" for name, csa in means.items())
          + f"; SD {np.std(list(means.values()), ddof=1):.2f} mm²"
          + (" (trained on, with pseudo-labels)" if single_subject_seen else ""))
    return 0


def slug(name):
    return "".join(c if c.isalnum() else "_" for c in name.split(" (")[0]).strip("_")


if __name__ == "__main__":
    raise SystemExit(main())
