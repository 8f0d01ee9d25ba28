"""The model's validation set and its per-image, per-person measures (used by evaluate_model.py, csa_drift.py
and the drift test).

    python tools/validation_set.py [--data ../shared/data] [--weights-dir DIR] [--csv OUT.csv]

prints one row per image (Dice at 0.5, soft Dice, CSA ratio to the manual mask on the manual's slices), one
row per person (the mean over that person's images), the mean over people, and scan-rescan differences; then
MT-on against MT-off, and known-truth changes to held-out images: lesions and an AP squeeze (pathology_check),
atrophy (atrophy_check), thicker slices and a tilted cord (geometry_check), Rician noise (noise_check), a bias
field (bias_check).

People, not files: sub-10062Ses1 and sub-10062Ses2 are one person; unf01's three contrasts are one person.
An image listed in model.json's `real_training_images` is marked "trained on" and left out of every mean.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "SoftSpinalCordSeg"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # SoftSpinalCordSegTraining (pathology)

from SoftSpinalCordSegLib import inference  # noqa: E402
from SoftSpinalCordSegLib.io import load_mask, load_volume  # noqa: E402
from SoftSpinalCordSegLib.phantom import rician_noise  # noqa: E402
from SoftSpinalCordSegLib.morphometry import compute_csa, dice, shared_z_range  # noqa: E402

GMC = "real/gmchallenge"
GMC_LABELS = f"{GMC}/derivatives/labels"


@dataclass(frozen=True)
class ValidationImage:
    person: str
    source: str  # site or dataset: whose rater drew the mask
    name: str  # short label of the image (person + contrast)
    image: str  # relative to the data folder
    mask: Optional[str]  # manual cord mask, relative to the data folder
    rescan_of: Optional[str] = None  # name of the image this one re-scans (same session, no mask)


def _gmc(subject, run, with_mask=True):
    person = subject.replace("Ses1", "").replace("Ses2", "")
    stem = f"{subject}_run-{run}_T2starw"
    return ValidationImage(
        person=f"gmc-{person}", source=f"gmchallenge {GMC_SITES[person]}",
        name=f"{subject} T2*w run-{run}", image=f"{GMC}/{subject}/anat/{stem}.nii.gz",
        mask=f"{GMC_LABELS}/{subject}/anat/{stem}_seg-manual.nii.gz" if with_mask else None,
        rescan_of=None if with_mask else f"{subject} T2*w run-1")


TEMPLATE = "PAM50 template"  # the PAM50_small T2 image: an average of many people, shown apart from the people
GMC_SITES = {"sub-10062": "CEITEC Brno", "sub-9584": "North-West University", "sub-9669": "Juntendo"}
GMC_SUBJECTS = ("sub-10062Ses1", "sub-10062Ses2", "sub-9584", "sub-9669")

IMAGES = [
    *[ValidationImage("unf01", "spine-generic (UNF)", f"unf01 {c}", f"real/unf01/sub-unf01_{c}.nii.gz",
                      f"real/unf01/sub-unf01_{c}_seg-manual.nii.gz") for c in ("T1w", "T2star", "T2w")],
    ValidationImage("tutorial sub-05", "SCT course", "sub-05 MT-on", "real/tutorial/sub-05_acq-MTon_MTS.nii.gz",
                    "real/tutorial/sub-05_acq-MTon_MTS_seg.nii.gz"),
    *[_gmc(subject, 1) for subject in GMC_SUBJECTS],
    ValidationImage("amu-test001", "CRMBM Marseille", "amu_test001 T2w", "real/amu_test001/sub-test001_T2w.nii.gz",
                    "real/amu_test001/sub-test001_T2w_seg-manual.nii.gz"),
    ValidationImage(TEMPLATE, "PAM50 template", "PAM50_small T2", "labels/PAM50_small/PAM50_small_t2.nii.gz",
                    "labels/PAM50_small/PAM50_small_cord.nii.gz"),
]
RESCANS = [_gmc(subject, 2, with_mask=False) for subject in GMC_SUBJECTS]


READ_BOTH_POLARITIES = True  # as softseg segment by default; --no-both-polarities reads each slice once


def segment(array, affine):
    return inference.segment_image(array, affine, both_polarities=READ_BOTH_POLARITIES)


def trained_on(image_path: str, seen) -> bool:
    """Whether model.json's real_training_images (seen) lists the image (labelled or pseudo-labelled)."""
    return any(image_path in entry for entry in seen)


def soft_dice(prob: np.ndarray, reference: np.ndarray) -> float:
    return float(2 * (prob * reference).sum() / max(prob.sum() + reference.sum(), 1e-6))


def mean_csa_by_slice(table) -> dict:
    """{slice index: CSA} of a CsaTable."""
    return dict(zip(table.column("slice").astype(int), table.column("csa_mm2").astype(float)))


def measure(item: ValidationImage, data: Path) -> dict:
    """Dice, soft Dice and mean CSA (model and manual) over the slices the manual mask covers."""
    volume = load_volume(data / item.image)
    prob = segment(volume.array, volume.affine)
    manual = load_mask(data / item.mask, volume).array >= 0.5
    model_csa = mean_csa_by_slice(compute_csa(prob, volume.affine))
    manual_csa = mean_csa_by_slice(compute_csa(manual.astype(np.float32), volume.affine))
    rated = sorted(manual_csa)
    csa_model = float(np.mean([model_csa.get(k, 0.0) for k in rated]))
    csa_manual = float(np.mean([manual_csa[k] for k in rated]))
    return {"dice": dice(prob >= 0.5, manual), "soft_dice": soft_dice(prob, manual.astype(np.float32)),
            "csa_model": csa_model, "csa_manual": csa_manual, "ratio": csa_model / csa_manual}


def rescan_difference(scan: ValidationImage, rescan: ValidationImage, data: Path) -> tuple:
    """Mean CSA of two scans of one session over the S range both cover, and their relative difference."""
    return paired_difference(data / scan.image, data / rescan.image)


def paired_difference(first: Path, second: Path) -> tuple:
    """Mean CSA of two images of one cord over the S range both cover, and the second's relative difference."""
    tables = {}
    for path in (first, second):
        volume = load_volume(path)
        tables[path] = compute_csa(segment(volume.array, volume.affine), volume.affine)
    _, _, means = means_over_shared_range(tables)
    return means[first], means[second], means[second] / means[first] - 1


def means_over_shared_range(tables: dict):
    """(lowest, highest z of the slices compared, {name: mean CSA}) of CSA tables of one cord (by name) over the
    S range (mm) all of them cover (morphometry.shared_z_range: images of one grid keep the same slices)."""
    columns = {name: (t.column("z_mm").astype(float), t.column("csa_mm2").astype(float)) for name, t in tables.items()}
    low, high = shared_z_range(list(tables.values()))
    used = {name: (z >= low) & (z <= high) for name, (z, _) in columns.items()}
    means = {name: float(np.nanmean(columns[name][1][inside])) for name, inside in used.items()}
    z_used = np.concatenate([columns[name][0][inside] for name, inside in used.items()])
    return float(z_used.min()), float(z_used.max()), means  # the slices compared, not the widened bounds


def evaluate(data: Path, rescans: bool = True, verbose: bool = True):
    """Rows per image, per person and the mean over people (held-out images only), scan-rescan rows."""
    info = inference.model_info()
    rows = []
    for item in IMAGES:
        if not (data / item.image).is_file():
            continue
        result = measure(item, data)
        rows.append({"item": item, "trained_on": trained_on(item.image, info.get("real_training_images", [])), **result})
        if verbose:
            print(f"  measured {item.name}: ratio {result['ratio']:.3f}", file=sys.stderr)
    people = {}
    for row in rows:
        if not row["trained_on"]:
            people.setdefault(row["item"].person, []).append(row)
    person_rows = [{"person": p, "source": rs[0]["item"].source, "n": len(rs),
                    **{k: float(np.mean([r[k] for r in rs])) for k in ("dice", "soft_dice", "ratio")}}
                   for p, rs in people.items()]
    rescan_rows = []
    if rescans:
        by_name = {item.name: item for item in IMAGES}
        for rescan in RESCANS:
            if (data / rescan.image).is_file():
                rescan_rows.append((rescan.person, rescan.rescan_of, *rescan_difference(by_name[rescan.rescan_of], rescan, data)))
    return rows, person_rows, rescan_rows


PATHOLOGY_IMAGES = ("unf01 T1w", "unf01 T2w", "sub-9584 T2*w run-1", "amu_test001 T2w")
BLOCK_SLICES = 10  # slices of the known-truth changes (the middle of the manual mask's range)


def _block(mask_canonical):
    """Indices of up to BLOCK_SLICES slices in the middle of those the manual mask covers (canonical view)."""
    covered = np.flatnonzero(mask_canonical.sum(axis=(0, 1)) >= 20)
    middle = len(covered) // 2
    return covered[max(0, middle - BLOCK_SLICES // 2) : middle + (BLOCK_SLICES + 1) // 2]


def canonical_image_and_mask(item: ValidationImage, data: Path):
    """(volume as loaded, its image and manual mask in canonical RAS axes as float32, their spacing, the way back
    to the file's voxel order)."""
    volume = load_volume(data / item.image)
    image, spacing, back = inference.canonical_view(volume.array.astype(np.float32), volume.affine)
    mask = inference.canonical_view(load_mask(data / item.mask, volume).array.astype(np.float32), volume.affine)[0]
    return volume, image, mask, spacing, back


def _cord_area(volume_array, affine, block):
    """Soft cord area (pixels) of each slice of block, in the canonical view of the model's output."""
    prob = segment(volume_array, affine)
    canonical, _, _ = inference.canonical_view(prob, affine)
    return canonical[..., block].sum(axis=(0, 1))


def pathology_check(item: ValidationImage, data: Path, seed: int = 0) -> dict:
    """Known-truth changes to the middle slices of a validation image: lesions as bright/dark as the CSF next to
    the cord (the hard case) and the opposite, the same lesions being painted on each slice; the cord and its
    mask squeezed to 55 % of their AP diameter, the cord alone (squeeze) or a band of the canal around it (band
    squeeze: its walls and the edge blur squeezed too). Returns model CSA changed / unchanged on those slices
    (lesions: 1 is right) and each squeeze's measured change over the true change (1 is right)."""
    from SoftSpinalCordSegTraining.pathology import compress, draw_lesions, paint_lesions, tissue_levels

    volume, image, mask, spacing, back = canonical_image_and_mask(item, data)
    block = _block(mask)
    before = _cord_area(volume.array, volume.affine, block)
    rng = np.random.default_rng(seed)
    lesions = draw_lesions(rng, count=2)
    result = {}
    for name, towards_csf in (("lesions like CSF", True), ("lesions unlike CSF", False)):
        changed = image.copy()
        for k in block:
            cord, csf = tissue_levels(image[..., k], mask[..., k], spacing[:2])
            sign = np.sign(csf - cord) * (1 if towards_csf else -1)
            drawn = [dict(lesion, sign=sign, strength=1.0, opacity=1.0) for lesion in lesions]
            changed[..., k] = paint_lesions(image[..., k], mask[..., k], spacing[:2], drawn)
        after = _cord_area(back(changed), volume.affine, block)
        result[name] = float(after.sum() / before.sum())
    for name, band_share in (("squeeze", 0.0), ("band squeeze", 1.0)):
        def squeeze(image_slice, mask_slice, k, band_share=band_share):
            return compress(image_slice, mask_slice, spacing[:2], np.random.default_rng(seed + k), ap_axis=1,
                            ap_factor=0.55, band_share=band_share)

        result[f"{name} true change"], result[f"{name} tracked"] = _change_tracked(
            volume, image, mask, back, block, before, squeeze)
    return result


def _change_tracked(volume, image, mask, back, block, before, change):
    """(true change of the cord's area on the slices of block, model's change over it: 1 is right) where
    change(image slice, mask slice, k) changes slice k of the canonical image and mask alike; before: the model's
    cord area on block as acquired (_cord_area)."""
    changed, changed_mask = image.copy(), mask.copy()
    for k in block:
        changed[..., k], changed_mask[..., k] = change(image[..., k], mask[..., k], k)
    after = _cord_area(back(changed), volume.affine, block)
    true_change = float(changed_mask[..., block].sum() / mask[..., block].sum())
    return true_change, float(after.sum() / before.sum() / true_change)


ATROPHY_AREAS = (0.8, 0.65, 0.5)  # the cord's area left: MS patients' cords read 5-20 % below controls', 50 % is severe


def atrophy_check(item: ValidationImage, data: Path) -> dict:
    """Known truth for atrophy: on the middle slices (_block) the cord alone is shrunk to each of ATROPHY_AREAS
    of its area, image and mask alike, the CSF around it widened to fill (pathology.radial_squeeze, as in
    training). Returns per area the true change of the mask's area and the model's change of CSA over it (1 is
    right): {"80 %: true change": ..., "80 %: measured / true": ..., ...}."""
    from SoftSpinalCordSegTraining.pathology import radial_squeeze

    volume, image, mask, _, back = canonical_image_and_mask(item, data)
    block = _block(mask)
    before = _cord_area(volume.array, volume.affine, block)
    result = {}
    for area in ATROPHY_AREAS:
        def shrink(image_slice, mask_slice, k, factor=float(np.sqrt(area))):
            return radial_squeeze(image_slice, mask_slice, (factor, factor))

        name = f"{area * 100:.0f} %"
        result[f"{name}: true change"], result[f"{name}: measured / true"] = _change_tracked(
            volume, image, mask, back, block, before, shrink)
    return result


def atrophy_report(data: Path):
    print(f"\nKnown-truth atrophy on {BLOCK_SLICES} middle slices: the cord alone shrunk to this share of its area, "
          "image and mask alike, the CSF around it widened: the mask's true change, and the model's change in CSA over it "
          "(target 0.95-1.05)\n")
    print_ratio_table(data, PATHOLOGY_IMAGES, atrophy_check)


def pathology_report(data: Path):
    by_name = {item.name: item for item in IMAGES}
    print(f"\nKnown-truth pathology on {BLOCK_SLICES} middle slices: model CSA with / without lesions (target 0.90-1.10), "
          "and an AP squeeze to 55 % of the cord alone or of a band of the canal: measured / true change in CSA "
          "(target 0.95-1.05)\n")
    print("| image | lesions like CSF | lesions unlike CSF | squeeze: true change | measured / true | "
          "band squeeze: true change | measured / true |\n|" + " --- |" * 7)
    for name in PATHOLOGY_IMAGES:
        if (data / by_name[name].image).is_file():
            r = pathology_check(by_name[name], data)
            print(f"| {name} | {r['lesions like CSF']:.3f} | {r['lesions unlike CSF']:.3f} | "
                  f"{r['squeeze true change']:.3f} | {r['squeeze tracked']:.3f} | "
                  f"{r['band squeeze true change']:.3f} | {r['band squeeze tracked']:.3f} |")


GEOMETRY_IMAGES = ("unf01 T1w", "unf01 T2w", "amu_test001 T2w")  # about 1 mm along S too: rotating keeps them sharp
THICKNESSES = (3, 5)  # slices averaged into one
TILTS_DEG = (15, 30)
TILT_CASES = (("tilted {}°", 0, False), ("tilted {}°, zero-filled", 0, True), ("leaning {}° to the side", 1, False))


def tilted(volume, centre, degrees, order, zero_fill=False, axis=0):
    """A canonical volume rotated by degrees about its R-L axis (axis 0; axis 1: its A-P axis, a lean to the
    side) through centre (voxels; the voxels must be about isotropic): the cord then crosses the axial slices
    at that extra angle, as in an angled acquisition. Where the rotation reaches outside the volume an image
    takes its nearest voxel, or 0 with zero_fill (as resampling tools fill it by default), and a mask 0."""
    from scipy import ndimage

    angle = np.deg2rad(degrees)
    turned = [a for a in range(3) if a != axis]  # the plane that turns: (A-P or R-L, S-I)
    rotation = np.eye(3)
    rotation[np.ix_(turned, turned)] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    return ndimage.affine_transform(volume, rotation, centre - rotation @ centre, order=order,
                                    mode="nearest" if order > 1 and not zero_fill else "constant")


def thickened(volume, factor, axis=2):
    """The volume as acquired with `factor`-times thicker voxels along `axis` (box profile; axis 2 of a
    canonical volume: thicker axial slices). A remainder of fewer than `factor` voxels is dropped."""
    array = np.moveaxis(volume, axis, 0)
    n = array.shape[0] // factor * factor
    return np.moveaxis(array[:n].reshape(n // factor, factor, *array.shape[1:]).mean(axis=1), 0, axis)


def _model_over_manual(image, mask, affine, trim=0):
    """Model/manual ratio of the mean angle-corrected CSA over the mask's slices (trim of them left out at each end)."""
    covered = np.flatnonzero(mask.sum(axis=(0, 1)) * affine[0, 0] * affine[1, 1] >= 20)
    covered = covered[trim : len(covered) - trim]
    model = mean_csa_by_slice(compute_csa(segment(image, affine), affine))
    manual = mean_csa_by_slice(compute_csa(mask, affine))
    return np.mean([model.get(k, 0.0) for k in covered]) / np.mean([manual[k] for k in covered])


def geometry_check(item: ValidationImage, data: Path) -> dict:
    """Known truth for acquisition geometry: image and manual mask alike averaged into thicker axial slices, or
    rotated (TILT_CASES) about the R-L axis (the cord crossing the slices obliquely), the image's corners that
    the rotation brings in from outside it filled with its nearest voxels or with zeros, or about the A-P axis
    (the cord leaning to the side). Returns the model/manual ratio of the angle-corrected CSA of each case over
    that of the image as it is (1 is right): {"3 mm slices": ..., "tilted 15°": ..., "tilted 15°, zero-filled": ...}."""
    from scipy import ndimage

    _, image, mask, spacing, _ = canonical_image_and_mask(item, data)
    affine = np.diag([*spacing, 1.0])
    as_acquired = _model_over_manual(image, mask, affine)
    result = {}
    for factor in THICKNESSES:
        thick_affine = np.diag([spacing[0], spacing[1], spacing[2] * factor, 1.0])
        thick = _model_over_manual(thickened(image, factor), thickened(mask, factor), thick_affine)
        result[f"{factor * spacing[2]:.0f} mm slices"] = float(thick / as_acquired)
    straight = _model_over_manual(image, mask, affine, trim=2)  # the tilts are measured without the ends
    block = _block(mask)
    centre = np.array([*ndimage.center_of_mass(mask[..., block[len(block) // 2]]), block[len(block) // 2]])
    for name, axis, zero_fill in TILT_CASES:
        for degrees in TILTS_DEG:
            turned = _model_over_manual(tilted(image, centre, degrees, 3, zero_fill, axis),
                                        tilted(mask, centre, degrees, 1, axis=axis), affine, trim=2)
            result[name.format(degrees)] = float(turned / straight)
    return result


def geometry_report(data: Path):
    print("\nKnown-truth geometry: image and manual mask averaged into thicker axial slices, or rotated about the R-L or A-P "
          "axis; model/manual ratio of the angle-corrected CSA over that ratio as acquired (target 0.95-1.05)\n")
    print_ratio_table(data, GEOMETRY_IMAGES, geometry_check)


def print_ratio_table(data: Path, names, check):
    """One row per image present of names, one column per case that check(item, data) returns."""
    by_name = {item.name: item for item in IMAGES}
    rows = {name: check(by_name[name], data) for name in names if (data / by_name[name].image).is_file()}
    if rows:
        columns = list(next(iter(rows.values())))
        print("| image | " + " | ".join(columns) + " |")
        print("|" + " --- |" * (1 + len(columns)))
        for name, result in rows.items():
            print(f"| {name} | " + " | ".join(f"{result[c]:.3f}" for c in columns) + " |")


NOISE_SNRS = (20, 10, 5)  # the cord's signal over the noise's SD: a good 3 T scan, a fast or 1.5 T one, a DWI-like one


def with_rician_noise(image, mask, snr, rng):
    """The image with the noise of a magnitude image: |image + complex Gaussian noise|, its SD the cord's median
    intensity over snr."""
    return rician_noise(image, float(np.median(image[mask > 0.5])) / snr, rng).astype(np.float32)


def _ratios_under(item: ValidationImage, data: Path, changes: dict) -> dict:
    """The model/manual ratio of the angle-corrected CSA of the image under each change(image, mask, spacing)
    (the mask unchanged) over that ratio as acquired (1 is right), in the order of changes."""
    _, image, mask, spacing, _ = canonical_image_and_mask(item, data)
    affine = np.diag([*spacing, 1.0])
    as_acquired = _model_over_manual(image, mask, affine)
    return {name: float(_model_over_manual(change(image, mask, spacing), mask, affine) / as_acquired)
            for name, change in changes.items()}


def noise_check(item: ValidationImage, data: Path, seed: int = 0) -> dict:
    """Known truth for noise: the ratio with Rician noise at each of NOISE_SNRS (_ratios_under):
    {"SNR 20": ..., ...}."""
    rng = np.random.default_rng(seed)  # drawn from in NOISE_SNRS' order
    return _ratios_under(item, data, {f"SNR {snr}": lambda image, mask, spacing, snr=snr: with_rician_noise(image, mask, snr, rng)
                                      for snr in NOISE_SNRS})


def noise_report(data: Path):
    print("\nKnown-truth noise: Rician noise of SD the cord's median intensity / SNR; model/manual ratio of the "
          "angle-corrected CSA over that ratio as acquired\n")
    print_ratio_table(data, PATHOLOGY_IMAGES, noise_check)


BIAS_FIELDS = {  # intensity over the field of view: name -> gain at (R-L, A-P) offsets in mm from its centre, over its extent
    "A-P x4": lambda x, y, extent: 4.0 ** (y / extent[1]),  # one end 4x the other: a coil on one side
    "R-L x3": lambda x, y, extent: 3.0 ** (x / extent[0]),
    "posterior coil": lambda x, y, extent: 1 + 3 * np.exp(-(y + extent[1] / 2) / 40.0),  # 4x at the back, 1/e in 40 mm
}


def with_bias_field(image, spacing, gain):
    """The image times a smooth gain over its axial plane (the same on every slice), the gain of BIAS_FIELDS."""
    x, y = ((np.arange(n) - (n - 1) / 2) * step for n, step in zip(image.shape[:2], spacing[:2]))
    extent = (image.shape[0] * spacing[0], image.shape[1] * spacing[1])
    return (image * gain(x[:, None], y[None, :], extent)[..., None]).astype(np.float32)


def bias_check(item: ValidationImage, data: Path) -> dict:
    """Known truth for intensity inhomogeneity (coils, field strength): the ratio under each of BIAS_FIELDS
    (_ratios_under)."""
    return _ratios_under(item, data, {name: lambda image, mask, spacing, gain=gain: with_bias_field(image, spacing, gain)
                                      for name, gain in BIAS_FIELDS.items()})


def bias_report(data: Path):
    print("\nKnown-truth intensity inhomogeneity: the image times a smooth gain over each axial slice; model/manual "
          "ratio of the angle-corrected CSA over that ratio as acquired\n")
    print_ratio_table(data, PATHOLOGY_IMAGES, bias_check)


def known_truth_reports(data: Path):
    """Every known-truth table: lesions and squeezes, atrophy, geometry, noise, bias field."""
    for report in (pathology_report, atrophy_report, geometry_report, noise_report, bias_report):
        report(data)


MT_PAIRS = [(f"sub-{n}", f"real/tutorial/sub-{n}_acq-MTon_MTS.nii.gz", f"real/tutorial/sub-{n}_acq-MToff_MTS.nii.gz")
            for n in ("01", "03", "05")]


def consistency_report(data: Path, rows):
    """Contrast consistency: MT-on against MT-off of each tutorial subject (one session, co-registered) and the
    SD of unf01's three contrasts."""
    print("\nContrast consistency: MT-on / MT-off of one session, mean CSA over the S range both cover (target within 3 %)\n")
    print("| subject | MT-on (mm²) | MT-off (mm²) | MT-off / MT-on |\n| --- | --- | --- | --- |")
    for subject, on, off in MT_PAIRS:
        if (data / on).is_file() and (data / off).is_file():
            first, second, difference = paired_difference(data / on, data / off)
            print(f"| {subject} | {first:.1f} | {second:.1f} | {difference:+.1%} |")
    unf01 = [r["csa_model"] for r in rows if r["item"].person == "unf01"]
    if len(unf01) > 1:
        print(f"\nSD of unf01's mean CSA across its {len(unf01)} contrasts: {np.std(unf01, ddof=1):.2f} mm² (target ≤ 2)")


def over_people(person_rows, key):
    return float(np.mean([r[key] for r in person_rows]))


def print_report(rows, person_rows, rescan_rows):
    print("| image | person | source | Dice | soft Dice | mean CSA model / manual (mm²) | ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        seen = " (trained on)" if r["trained_on"] else ""
        print(f"| {r['item'].name}{seen} | {r['item'].person} | {r['item'].source} | {r['dice']:.3f} | {r['soft_dice']:.3f} | "
              f"{r['csa_model']:.1f} / {r['csa_manual']:.1f} | {r['ratio']:.3f} |")
    print("\nPer person (images never trained on; mean over the person's images)\n")
    print("| person | source | images | Dice | soft Dice | CSA ratio | error |\n| --- | --- | --- | --- | --- | --- | --- |")
    for r in person_rows:
        print(f"| {r['person']} | {r['source']} | {r['n']} | {r['dice']:.3f} | {r['soft_dice']:.3f} | {r['ratio']:.3f} | {r['ratio'] - 1:+.1%} |")
    people = [r for r in person_rows if r["person"] != TEMPLATE]  # the template is an average, not a person
    for label, group in ((f"mean over {len(people)} people", people), ("with the template", person_rows)):
        print(f"| **{label}** | | | {over_people(group, 'dice'):.3f} | {over_people(group, 'soft_dice'):.3f} | "
              f"{over_people(group, 'ratio'):.3f} | mean abs {np.mean([abs(r['ratio'] - 1) for r in group]):.1%} |")
    held = [r for r in rows if not r["trained_on"]]
    if held:
        print(f"\nHeld-out images: Dice min {min(r['dice'] for r in held):.3f}; CSA ratio "
              f"{min(r['ratio'] for r in held):.3f} to {max(r['ratio'] for r in held):.3f}; "
              f"mean |error| over images {np.mean([abs(r['ratio'] - 1) for r in held]):.1%}")
    if rescan_rows:
        print("\nScan-rescan (same session, no mask): mean CSA over the S range both cover\n")
        print("| person | scan | run-1 (mm²) | run-2 (mm²) | difference |\n| --- | --- | --- | --- | --- |")
        for person, scan, first, second, difference in rescan_rows:
            print(f"| {person} | {scan} | {first:.1f} | {second:.1f} | {difference:+.1%} |")


def write_csv(rows, path):
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["image", "person", "trained_on", "dice", "soft_dice", "csa_model_mm2", "csa_manual_mm2", "ratio"])
        for r in rows:
            out.writerow([r["item"].name, r["item"].person, int(r["trained_on"]), f"{r['dice']:.4f}",
                          f"{r['soft_dice']:.4f}", f"{r['csa_model']:.2f}", f"{r['csa_manual']:.2f}", f"{r['ratio']:.4f}"])


def default_data() -> str:
    return os.environ.get("SOFTSEG_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=default_data())
    p.add_argument("--weights-dir", help="evaluate the weights in this folder instead of the shipped ones")
    p.add_argument("--no-rescans", action="store_true", help="skip the scan-rescan rows")
    p.add_argument("--csv", help="also write the per-image rows here")
    p.add_argument("--no-pathology", action="store_true", help="skip the known-truth lesion, squeeze, atrophy, slice-thickness, tilt, noise and bias-field rows")
    p.add_argument("--working-spacing", type=float, metavar="MM",
                   help="run the network on this in-plane grid instead of the 1 mm it was trained on (a measurement)")
    p.add_argument("--both-polarities", action=argparse.BooleanOptionalAction, default=True,
                   help="segment each slice as it is and with its grey levels inverted, averaged (softseg segment's "
                        "default); --no-both-polarities reads each slice once")
    args = p.parse_args(argv)
    global READ_BOTH_POLARITIES
    READ_BOTH_POLARITIES = args.both_polarities
    if args.working_spacing:
        inference.WORKING_SPACING_MM = args.working_spacing
    if args.weights_dir:
        os.environ["SOFTSEG_MODEL_DIR"] = args.weights_dir
    rows, person_rows, rescan_rows = evaluate(Path(args.data), rescans=not args.no_rescans)
    print_report(rows, person_rows, rescan_rows)
    consistency_report(Path(args.data), rows)
    if not args.no_pathology:
        known_truth_reports(Path(args.data))
    if args.csv:
        write_csv(rows, args.csv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
