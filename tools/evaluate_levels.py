"""Automatic vertebral levels against known truth: disc errors (mm along the cord), per-slice levels, refusals.

    python tools/evaluate_levels.py [--data DIR] [--model] [--crops]

Images: the PAM50_small T2 template and deformed copies of it (stretched along the cord by 0.8 and 1.2, curved,
cropped to cervical and brainstem-to-thorax fields of view and without C2, contrast inverted / gamma / noise), whose truth is their
level map; real/amu_test001 (discs labelled by eye, tools/amu_test001_discs.json) with its manual cord mask and,
with --model, with the model's segmentation; real/tutorial/t2_lumbar (no C2: a refusal is expected).
A disc counts as found within 3 mm; a slice is right when its level equals the truth's (slices with a truth).
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from SoftSpinalCordSegLib.io import load_labels, load_mask, load_volume
from SoftSpinalCordSegLib.morphometry import compute_csa
from SoftSpinalCordSegLib.vertebrae import STEP_MM, detect_discs, disc_arcs_from_level_map

HERE = Path(__file__).resolve().parent


def warp(array, shift_a_mm, order):
    """Shift every axial slice of a LAS 1x1x2 mm PAM50_small array along A by shift_a_mm(k)."""
    from scipy.ndimage import map_coordinates

    i, j, k = np.indices(array.shape, dtype=float)
    # LAS: +j is anterior (1 mm per voxel)
    return map_coordinates(array, [i, j - shift_a_mm(k), k], order=order, mode="nearest")


def pam50_cases(data):
    folder = data / "labels" / "PAM50_small"
    image = load_volume(folder / "PAM50_small_t2.nii.gz")
    cord = load_mask(folder / "PAM50_small_cord.nii.gz", image).array
    levels = load_labels(folder / "PAM50_small_levels.nii.gz", image).array
    t2, affine = image.array.astype(np.float32), image.affine
    rng = np.random.default_rng(0)

    def stretched(factor):
        scaled = affine.copy()
        scaled[:3, 2] *= factor
        return scaled

    bend = lambda k: 12.0 * np.sin(np.pi * k / t2.shape[2])  # noqa: E731  12 mm bow, one arc over the length
    s_curve = lambda k: 8.0 * np.sin(2 * np.pi * k / t2.shape[2])  # noqa: E731
    cervical = slice(150, 275)  # brainstem to about T3 (cord from C1, 2 mm slices)
    below_c2 = slice(120, 215)  # starts below C3: no C2 in view
    thorax = slice(110, 275)  # brainstem to about T8: the large field of view of a cervicothoracic sagittal scan
    yield "PAM50_small T2", t2, cord, levels, affine
    yield "stretched x0.8", t2, cord, levels, stretched(0.8)
    yield "stretched x1.2", t2, cord, levels, stretched(1.2)
    yield "curved (12 mm bow)", warp(t2, bend, 1), warp(cord, bend, 1), warp(levels, bend, 0), affine
    yield "S-curved, x1.1", warp(t2, s_curve, 1), warp(cord, s_curve, 1), warp(levels, s_curve, 0), stretched(1.1)
    yield "cervical crop", t2[..., cervical], cord[..., cervical], levels[..., cervical], _cropped(affine, cervical)
    yield "brainstem to T8 crop, x0.9", t2[..., thorax], cord[..., thorax], levels[..., thorax], _cropped(stretched(0.9), thorax)
    yield "cervical crop x0.85", t2[..., cervical], cord[..., cervical], levels[..., cervical], _cropped(stretched(0.85), cervical)
    yield "inverted contrast", t2.max() - t2, cord, levels, affine
    yield "gamma 0.5 + noise", np.sqrt(t2) + rng.normal(0, 0.05 * np.sqrt(t2).std(), t2.shape), cord, levels, affine
    yield "crop without C2 (refusal expected)", t2[..., below_c2], cord[..., below_c2], levels[..., below_c2], _cropped(affine, below_c2)


def _cropped(affine, window):
    moved = affine.copy()
    moved[:3, 3] += affine[:3, 2] * window.start
    return moved


def evaluate(name, image, cord, affine, truth_arcs_of, truth_levels):
    """One image: detect, then compare. truth_arcs_of(centreline) -> {disc: arc}; truth_levels: a level map on
    the image's grid, or {disc number: RAS position} (the levels between them)."""
    start = time.perf_counter()
    result = detect_discs(image, affine, cord)
    seconds = time.perf_counter() - start
    truth = truth_arcs_of(result.centreline)
    row = {"image": name, "seconds": seconds, "confidence": result.confidence, "refusal": result.refusal}
    if not result.ok:
        return row
    common = sorted(set(truth) & set(result.disc_arcs))
    errors = [abs(result.disc_arcs[n] - truth[n]) for n in common]
    row["discs"] = len(common)
    row["max_error_mm"] = max(errors) if errors else float("nan")
    row["mean_error_mm"] = float(np.mean(errors)) if errors else float("nan")
    row["within_3mm"] = sum(e <= 3.0 for e in errors)
    row["missed"] = sorted(set(truth) - set(result.disc_arcs))
    row["extra"] = sorted(set(result.disc_arcs) - set(truth))
    found = compute_csa(cord, affine, discs=result.level_points())
    if isinstance(truth_levels, dict):
        expected = compute_csa(cord, affine, discs=truth_levels)
    else:
        expected = compute_csa(cord, affine, truth_levels)
    right = total = unlabelled = 0
    for found_row, expected_row in zip(found.rows, expected.rows):
        if expected_row["level"] is None:
            continue
        total += 1
        right += found_row["level"] == expected_row["level"]
        unlabelled += found_row["level"] is None
    row["unlabelled"] = unlabelled
    row["slices_right"] = right / total if total else float("nan")
    labelled = total - unlabelled
    row["labelled_right"] = right / labelled if labelled else float("nan")
    row["n_slices"] = total
    return row


def model_segmentation(image, cache):
    if cache.exists():
        return load_mask(cache).array
    from SoftSpinalCordSegLib.inference import segment_image
    from SoftSpinalCordSegLib.io import save_like

    probability = segment_image(image.array, image.affine, device="cpu")
    save_like(probability, image, cache)
    return probability


def crop_sweep(data, model):
    """Many fields of view: PAM50_small (its cord mask and, with --model, the model's; stretched 0.85/1/1.15 along
    the cord, the last with inverted contrast) and amu_test001 (manual mask and, with --model, the model's), top
    and bottom cut at several levels. Counts crops numbered, refused, numbered wrongly (a disc over 8 mm, half a
    vertebra, from the truth) and with a disc over 3 mm off."""
    folder = data / "labels" / "PAM50_small"
    pam50 = load_volume(folder / "PAM50_small_t2.nii.gz")
    levels = load_labels(folder / "PAM50_small_levels.nii.gz", pam50).array
    masks = {"cord mask": load_mask(folder / "PAM50_small_cord.nii.gz", pam50).array}
    amu = load_volume(data / "real" / "amu_test001" / "sub-test001_T2w.nii.gz")
    amu_masks = {"manual mask": load_mask(data / "real" / "amu_test001" / "sub-test001_T2w_seg-manual.nii.gz", amu).array}
    if model:
        scratch = Path(tempfile.gettempdir())
        masks["model"] = model_segmentation(pam50, scratch / "softseg_levels_pam50_prob.nii.gz")
        amu_masks["model"] = model_segmentation(amu, scratch / "softseg_levels_amu_prob.nii.gz")
    truth = json.loads((HERE / "amu_test001_discs.json").read_text())["discs"]
    outcomes = []
    for mask in masks.values():
        for factor in (0.85, 1.0, 1.15):
            for top in (275, 250, 240, 235, 230, 226, 222):
                for bottom in (185, 160, 120, 60):
                    window = slice(bottom, top)
                    affine = pam50.affine.copy()
                    affine[:3, 2] *= factor
                    affine = _cropped(affine, window)
                    image = pam50.array[..., window]
                    result = detect_discs(image.max() - image if factor > 1 else image, affine, mask[..., window])
                    outcomes.append(_outcome(result, lambda c: disc_arcs_from_level_map(levels[..., window], affine, c)))
    for mask in amu_masks.values():  # PSR: the second axis runs up (S)
        for cut_top in (0, 5, 10, 15, 20, 25, 30, 35, 40, 45):
            for bottom in (0, 40, 80):
                window = slice(bottom, amu.array.shape[1] - cut_top)
                affine = amu.affine.copy()
                affine[:3, 3] += amu.affine[:3, 1] * bottom
                result = detect_discs(amu.array[:, window], affine, mask[:, window])
                outcomes.append(_outcome(result, lambda c: {int(n): c.arc_of(d["ras_mm"]) for n, d in truth.items()}))
    counts = {key: sum(outcome == key for outcome in outcomes) for key in ("right", "off >3 mm", "wrong", "refused")}
    print(f"crops: {len(outcomes)}; numbered right (every disc within 3 mm) {counts['right']}, a disc 3-8 mm off "
          f"{counts['off >3 mm']}, numbered wrongly {counts['wrong']}, refused {counts['refused']}")


def _outcome(result, truth_arcs_of):
    if not result.ok:
        return "refused"
    truth = truth_arcs_of(result.centreline)
    end = (len(result.centreline) - 1) * STEP_MM
    errors = [abs(result.disc_arcs[n] - truth[n]) for n in truth if n in result.disc_arcs and 1.0 < truth[n] < end - 1.0]
    worst = max(errors, default=0.0)
    return "wrong" if worst > 8.0 else "off >3 mm" if worst > 3.0 else "right"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=HERE.parent / ".." / "shared" / "data")
    parser.add_argument("--model", action="store_true", help="also run on the model's segmentations (cached in the system temporary folder)")
    parser.add_argument("--crops", action="store_true", help="then count outcomes over many fields of view (about a minute)")
    args = parser.parse_args()
    rows = []
    for name, image, cord, levels, affine in pam50_cases(args.data):
        rows.append(evaluate(name, image, cord, affine, lambda c, l=levels, a=affine: disc_arcs_from_level_map(l, a, c),
                             levels))
    amu = args.data / "real" / "amu_test001"
    truth = json.loads((HERE / "amu_test001_discs.json").read_text())
    amu_image = load_volume(amu / "sub-test001_T2w.nii.gz")
    amu_truth = lambda c: {int(n): c.arc_of(d["ras_mm"]) for n, d in truth["discs"].items()}  # noqa: E731
    amu_points = {int(n): np.array(d["ras_mm"]) for n, d in truth["discs"].items()}
    manual = load_mask(amu / "sub-test001_T2w_seg-manual.nii.gz", amu_image).array
    rows.append(evaluate("amu_test001 (manual cord mask)", amu_image.array, manual, amu_image.affine, amu_truth, amu_points))
    lumbar = load_volume(args.data / "real" / "tutorial" / "t2_lumbar.nii.gz")
    if args.model:
        scratch = Path(tempfile.gettempdir())  # the model's segmentations, cached between runs
        pam50 = load_volume(args.data / "labels" / "PAM50_small" / "PAM50_small_t2.nii.gz")
        pam50_levels = load_labels(args.data / "labels" / "PAM50_small" / "PAM50_small_levels.nii.gz", pam50).array
        segmented = model_segmentation(pam50, scratch / "softseg_levels_pam50_prob.nii.gz")
        rows.append(evaluate("PAM50_small T2 (model)", pam50.array, segmented, pam50.affine,
                             lambda c: disc_arcs_from_level_map(pam50_levels, pam50.affine, c), pam50_levels))
        for window in (slice(170, 275), slice(185, 275)):  # brainstem to C7 / C5: the model's cord goes on above C1
            affine = _cropped(pam50.affine, window)
            rows.append(evaluate(f"PAM50 brainstem to {'C7' if window.start == 170 else 'C5'} crop (model)",
                                 pam50.array[..., window], segmented[..., window], affine,
                                 lambda c, l=pam50_levels[..., window], a=affine: disc_arcs_from_level_map(l, a, c),
                                 pam50_levels[..., window]))
        segmented = model_segmentation(amu_image, scratch / "softseg_levels_amu_prob.nii.gz")
        rows.append(evaluate("amu_test001 (model)", amu_image.array, segmented, amu_image.affine, amu_truth, amu_points))
        segmented = model_segmentation(lumbar, scratch / "softseg_levels_lumbar_prob.nii.gz")
        rows.append(evaluate("t2_lumbar (model; refusal expected)", lumbar.array, segmented, lumbar.affine, lambda c: {}, {}))
    print("discs: numbered and compared with the truth; <=3mm: of those, within 3 mm; mean/max: error (mm along the cord);\n"
          "right: slices whose level equals the truth's, of all slices with a true level; of labelled: of those given a level;\n"
          "none: slices with a true level left without one (beyond the template's discs, C2/C3 to T11/T12 and a disc more)")
    print(f"{'image':40s} {'discs':>5s} {'<=3mm':>5s} {'mean':>5s} {'max':>5s} {'right':>7s} {'of lab.':>7s} {'none':>4s} "
          f"{'conf':>6s} {'s':>5s}  refusal")
    for row in rows:
        if row["refusal"]:
            print(f"{row['image']:40s} {'':>5s} {'':>5s} {'':>5s} {'':>5s} {'':>7s} {'':>7s} {'':>4s} {row['confidence']:6.3f} "
                  f"{row['seconds']:5.2f}  {row['refusal']}")
            continue
        print(f"{row['image']:40s} {row['discs']:5d} {row['within_3mm']:5d} {row['mean_error_mm']:5.1f} "
              f"{row['max_error_mm']:5.1f} {row['slices_right']:7.1%} {row['labelled_right']:7.1%} {row['unlabelled']:4d} "
              f"{row['confidence']:6.3f} {row['seconds']:5.2f}"
              + (f"  missed {row['missed']}" if row["missed"] else ""))
    if args.crops:
        crop_sweep(args.data, args.model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
