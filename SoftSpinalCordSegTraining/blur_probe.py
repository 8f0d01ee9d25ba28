"""How much smaller the model reads a cord as the image gets blurrier, on plain renderings with known targets.

    python -m SoftSpinalCordSegTraining.blur_probe [--weights-dir DIR] [--margin MM] [--data ../shared/data] [--slices 48]

Canal slices of the training subjects' spine-generic cord and CSF masks (never unf01) are rendered plainly,
T2w-like: grey cord 0.3, bright CSF 1.0, tissue 0.25, dark bone 0.05, the cord drawn the model's rater
margin wider than its target (as in training), at 0.5 mm, blurred by a Gaussian of 0, 2 and 3 mm FWHM and
area-averaged to 1 mm. The slices are stacked into one volume and segmented by the full pipeline; the
printed ratio is the mean over slices of the soft area over the target's partial-volume area (1.0: no
bias). The model card quotes it ("Blurred or coarse acquisitions").
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "SoftSpinalCordSeg"))

TISSUE = 0.25
INTENSITIES = {"bone": 0.05, "csf": 1.0, "cord": 0.3}
FWHM_MM = (0.0, 2.0, 3.0)


def render(patches, margin_mm, fwhm_mm):
    """(images, targets) at 1 mm of the canal patches, centred on 128 mm canvases."""
    from scipy import ndimage

    from SoftSpinalCordSegTraining import synth

    side, patch_side = synth.CANVAS_HR, synth.PATCH_HR
    corner = (side - patch_side) // 2
    images, targets = [], []
    for patch in patches:
        occ = np.zeros((4, side, side), np.float32)
        occ[:, corner:corner + patch_side, corner:corner + patch_side] = patch
        targets.append(synth.area_downsample(occ[synth.WM] + occ[synth.GM]))
        occ = synth.widen_visible_cord(occ, margin_mm)
        image = TISSUE * (1 - np.clip(occ.sum(0), 0, 1)) + INTENSITIES["bone"] * occ[synth.BONE]
        image += INTENSITIES["csf"] * occ[synth.CSF] + INTENSITIES["cord"] * (occ[synth.WM] + occ[synth.GM])
        if fwhm_mm:
            image = ndimage.gaussian_filter(image, fwhm_mm / 2.355 / synth.HIRES_MM)
        images.append(synth.area_downsample(image))
    return np.stack(images, axis=2), np.stack(targets, axis=2)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.environ.get("SOFTSEG_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data")))
    p.add_argument("--weights-dir", help="probe the weights in this folder instead of the shipped ones")
    p.add_argument("--margin", type=float, help="rater margin (mm) to draw; default: the model's (model.json)")
    p.add_argument("--slices", type=int, default=48)
    args = p.parse_args(argv)
    if args.weights_dir:
        os.environ["SOFTSEG_MODEL_DIR"] = args.weights_dir
    from SoftSpinalCordSegLib import inference
    from SoftSpinalCordSegTraining import synth

    rng = np.random.default_rng(0)
    bank = synth.spinegeneric_bank(os.path.join(args.data, "labels", "spinegeneric10"), rng)
    patches = bank[rng.choice(len(bank), min(args.slices, len(bank)), replace=False)].astype(np.float32)
    margin = inference.rater_margin_mm() if args.margin is None else args.margin
    print(f"{len(patches)} canal slices, cord drawn {margin} mm wider than its target")
    for fwhm in FWHM_MM:
        images, targets = render(patches, margin, fwhm)
        prob = inference.segment_image(images, np.eye(4), device="cpu", largest_component=False)
        ratios = prob.sum(axis=(0, 1)) / targets.sum(axis=(0, 1))
        print(f"blur {fwhm:.0f} mm FWHM: soft area / target {ratios.mean():.3f} (median {np.median(ratios):.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
