"""Soft pseudo-labels of the unlabelled tutorial images, for self-training (train.py --pseudo-labels DIR).

    python tools/pseudo_label.py --weights-dir TEACHER --out runs/pseudo_X [--exclude sub-05] [--data ../shared/data]

The teacher (a folder with softseg_2d.pt, its checksum and model.json) segments every unlabelled axial
tutorial image (the lumbar sagittal one is left out: the conus has no reference to check it against);
the image (the 4D DWI as its mean) and its soft mask are written under --out with pairs.json listing them.
--exclude drops images whose name contains the text, e.g. a subject kept for a held-out test.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from evaluate_model import UNLABELLED, load_image  # noqa: E402

SKIPPED = ("t2_lumbar",)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.environ.get("SOFTSEG_DATA", "../shared/data"))
    p.add_argument("--weights-dir", required=True, help="the teacher model's folder")
    p.add_argument("--out", required=True)
    p.add_argument("--exclude", action="append", default=[], help="leave out images whose path contains this")
    args = p.parse_args(argv)
    os.environ["SOFTSEG_MODEL_DIR"] = args.weights_dir
    from SoftSpinalCordSegLib import inference
    from SoftSpinalCordSegLib.io import save_like
    from SoftSpinalCordSegLib.morphometry import slice_axis

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pairs = []
    for name, path, how in UNLABELLED:
        if any(s in path for s in SKIPPED + tuple(args.exclude)):
            continue
        volume = load_image(os.path.join(args.data, path), how)
        prob = inference.segment_image(volume.array, volume.affine, device="cpu")
        stem = Path(path).name.replace(".nii.gz", "")
        image_file, label_file = out / f"{stem}.nii.gz", out / f"{stem}_pseudo.nii.gz"
        save_like(volume.array, volume, image_file)
        save_like(prob, volume, label_file)
        pairs.append({"image": str(image_file.resolve()), "label": str(label_file.resolve()), "source": path})
        axis = slice_axis(volume.affine)
        per_slice = np.moveaxis(prob, axis, 0).reshape(prob.shape[axis], -1).max(axis=1)
        print(f"{name:14s} cord on {int((per_slice >= 0.5).sum())}/{prob.shape[axis]} slices")
    (out / "pairs.json").write_text(json.dumps({"teacher": str(Path(args.weights_dir).resolve()), "pairs": pairs},
                                               indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
