"""Soft pseudo-labels of the unlabelled tutorial images, for self-training (train.py --pseudo-labels DIR).

    python -m SoftSpinalCordSegTraining.pseudo_label --weights-dir TEACHER --out runs/pseudo_X [--exclude sub-05] [--data ../shared/data]
    python -m SoftSpinalCordSegTraining.pseudo_label --consensus --weights-dir TEACHER --out runs/consensus_X [--exclude sub-05]

The teacher (a folder with softseg_2d.pt, its checksum and model.json) segments every unlabelled axial
tutorial image (the lumbar sagittal one is left out: the conus has no reference to check it against);
the image (the 4D DWI as its mean) and its soft mask are written under --out with pairs.json listing them.
--exclude drops images whose name contains the text, e.g. a subject kept for a held-out test.

--consensus: the contrasts of one subject and session (SESSIONS; co-registered by the scanner) share one
label, as the published model's targets were averaged over each subject's contrasts: the mean of the
teacher's soft masks of the session's "voters" (a slice one voter misses takes the others'), or the session's
manual mask. "Followers" get that label resampled to their grid without voting: the DWI, which the teacher
reads 20 % smaller than MT0/MT1 of the same subject, is trained on as its mean, b=0 mean, diffusion-weighted
mean and two single volumes. Images with a manual label count twice (`repeat` in pairs.json).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

from evaluate_model import UNLABELLED, load_image  # noqa: E402

SKIPPED = ("t2_lumbar",)
TUTORIAL = "real/tutorial/"
SESSIONS = [
    {"voters": ["sub-05_acq-MTon_MTS.nii.gz", "sub-05_acq-MToff_MTS.nii.gz"], "manual": "sub-05_acq-MTon_MTS_seg.nii.gz"},
    {"voters": ["sub-01_acq-MTon_MTS.nii.gz", "sub-01_acq-MToff_MTS.nii.gz"]},
    {"voters": ["sub-03_acq-MTon_MTS.nii.gz", "sub-03_acq-MToff_MTS.nii.gz"]},
    {"voters": ["mt0.nii.gz", "mt1.nii.gz"], "followers": ["dmri.nii.gz"]},
]
MANUAL_REPEAT = 2
DWI_SINGLE_VOLUMES = (1, 16)  # two diffusion-weighted volumes (4D indices), noisier than the means


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.environ.get("SOFTSEG_DATA", "../shared/data"))
    p.add_argument("--weights-dir", required=True, help="the teacher model's folder")
    p.add_argument("--out", required=True)
    p.add_argument("--exclude", action="append", default=[], help="leave out images whose path contains this")
    p.add_argument("--consensus", action="store_true", help="one label per subject and session (see above)")
    p.add_argument("--both-polarities", action="store_true",
                   help="the teacher reads each slice as it is and with its grey levels inverted, and averages")
    args = p.parse_args(argv)
    os.environ["SOFTSEG_MODEL_DIR"] = args.weights_dir
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pairs = consensus_pairs(args, out) if args.consensus else teacher_pairs(args, out)
    (out / "pairs.json").write_text(json.dumps({"teacher": str(Path(args.weights_dir).resolve()), "pairs": pairs},
                                               indent=2) + "\n")
    return 0


def teacher_pairs(args, out):
    """Each unlabelled image with the teacher's soft mask of it."""
    from SoftSpinalCordSegLib import inference
    from SoftSpinalCordSegLib.io import save_like

    pairs = []
    for name, path, how in UNLABELLED:
        if any(s in path for s in SKIPPED + tuple(args.exclude)):
            continue
        volume = load_image(os.path.join(args.data, path), how)
        prob = inference.segment_image(volume.array, volume.affine, device="cpu", both_polarities=args.both_polarities)
        stem = Path(path).name.replace(".nii.gz", "")
        image_file, label_file = out / f"{stem}.nii.gz", out / f"{stem}_pseudo.nii.gz"
        save_like(volume.array, volume, image_file)
        save_like(prob, volume, label_file)
        pairs.append({"image": str(image_file.resolve()), "label": str(label_file.resolve()), "source": path})
        print(f"{name:14s} cord on {slices_with_cord(prob, volume.affine)} slices")
    return pairs


def slices_with_cord(prob, affine):
    """'found/total': slices (along the image's own slice axis) where the cord fraction reaches 0.5."""
    from SoftSpinalCordSegLib.morphometry import slice_axis

    axis = slice_axis(affine)
    per_slice = np.moveaxis(prob, axis, 0).reshape(prob.shape[axis], -1).max(axis=1)
    return f"{int((per_slice >= 0.5).sum())}/{prob.shape[axis]}"


def consensus_pairs(args, out):
    """Every image of SESSIONS (less --exclude) with its session's one label."""
    from SoftSpinalCordSegLib import inference
    from SoftSpinalCordSegLib.io import Volume, load_mask, load_volume

    pairs = []
    for session in SESSIONS:
        voters = [f for f in session["voters"] if not any(text in TUTORIAL + f for text in args.exclude)]
        if len(voters) < len(session["voters"]):
            continue  # a held-out subject leaves with all its contrasts
        volumes = [load_volume(os.path.join(args.data, TUTORIAL + f)) for f in voters]
        if "manual" in session:
            label, label_from = load_mask(os.path.join(args.data, TUTORIAL + session["manual"]), volumes[0]).array, "manual mask"
        else:
            label = consensus_label([inference.segment_image(v.array, v.affine, device="cpu",
                                                             both_polarities=args.both_polarities) for v in volumes])
            label_from = "pseudo-labelled, consensus of " + " and ".join(voters)
        repeat = MANUAL_REPEAT if "manual" in session else 1
        for file, volume in zip(voters, volumes):
            pairs.append(_write_pair(out, file, "", volume.array, label, volume, label_from, repeat))
        for file in session.get("followers", []):
            series = nib.load(os.path.join(args.data, TUTORIAL + file))
            views = dwi_views(np.asanyarray(series.dataobj))
            grid = Volume(array=views["mean"], affine=series.affine)
            follower_label = resample_label(label, volumes[0].affine, grid.array.shape, grid.affine)
            for view, array in views.items():
                pairs.append(_write_pair(out, file, view, array, follower_label, grid, label_from, repeat))
    return pairs


def consensus_label(masks):
    """Mean of co-registered soft masks; on a slice (third axis) where one has under half another's area, the
    mean of those that found the cord there (a voter that misses a slice, e.g. to an artefact, has no say)."""
    masks = np.stack(masks).astype(np.float32)
    areas = masks.sum(axis=(1, 2))  # (voter, slice)
    found = areas >= 0.5 * areas.max(axis=0, keepdims=True)
    return (masks * found[:, None, None, :]).sum(0) / found.sum(0)


def resample_label(label, label_affine, shape, affine):
    """A soft label moved onto another grid of the same session (linear interpolation, scanner coordinates)."""
    from nibabel.processing import resample_from_to

    moved = resample_from_to(nib.Nifti1Image(label.astype(np.float32), label_affine), (shape, affine), order=1)
    return np.clip(moved.get_fdata(), 0, 1).astype(np.float32)


def dwi_views(series):
    """3D images of a 4D DWI series: the mean, the b=0 mean, the diffusion-weighted mean and two single
    volumes. b=0 volumes are told by their signal (over 1.5x the median volume's mean)."""
    series = np.asarray(series, np.float32)
    means = series.reshape(-1, series.shape[3]).mean(axis=0)
    b0 = means > 1.5 * np.median(means)
    views = {"mean": series.mean(axis=3), "b0 mean": series[..., b0].mean(axis=3),
             "diffusion-weighted mean": series[..., ~b0].mean(axis=3)}
    for index in DWI_SINGLE_VOLUMES:
        if index < b0.size and not b0[index]:
            views[f"volume {index}"] = series[..., index]
    return views


def _write_pair(out, file, view, image, label, grid, label_from, repeat):
    """Write an image and its label in the grid of `grid` (an io.Volume); their pairs.json entry."""
    from SoftSpinalCordSegLib.io import save_like

    stem = file.replace(".nii.gz", "") + ("_" + view.replace(" ", "-") if view else "")
    image_file, label_file = out / f"{stem}.nii.gz", out / f"{stem}_label.nii.gz"
    save_like(image, grid, image_file)
    save_like(label, grid, label_file)
    print(f"{stem:40s} label on {slices_with_cord(label, grid.affine)} slices ({label_from})")
    entry = {"image": str(image_file.resolve()), "label": str(label_file.resolve()), "source": TUTORIAL + file,
             "label_from": label_from, "repeat": repeat}
    return dict(entry, view=view) if view else entry


if __name__ == "__main__":
    raise SystemExit(main())
