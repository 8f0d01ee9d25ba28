"""Validate training runs side by side on unf01 (Markdown table): the ablation of the model card.

    python -m SoftSpinalCordSegTraining.evaluate_ablation runs/ablation_full runs/ablation_no_synthetic ... [--data ../shared/data]

Each run's last.pt is evaluated with the same clean-up as `segment_image`: Dice (p >= 0.5 vs manual) and the
soft volume over the manual volume, per contrast, and the spread of that ratio across contrasts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "SoftSpinalCordSeg"))

from SoftSpinalCordSegLib.model import build_network  # noqa: E402
from SoftSpinalCordSegTraining.train import validate  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+")
    p.add_argument("--data", default=os.environ.get("SOFTSEG_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data")))
    args = p.parse_args(argv)
    import torch

    print("| run | iterations | options | Dice T1w / T2star / T2w | volume ratio T1w / T2star / T2w | SD of ratio |")
    print("| --- | --- | --- | --- | --- | --- |")
    for run in args.runs:
        ckpt = torch.load(Path(run) / "last.pt", map_location="cpu", weights_only=True)
        config = json.loads(ckpt["config"])
        net = build_network()
        net.load_state_dict(ckpt["model"])
        result = validate(net, args.data)
        dice = " / ".join(f"{r['dice']:.3f}" for r in result.values())
        ratios = [r["csa_ratio"] for r in result.values()]
        options = ", ".join(k for k in ("no_synthetic", "no_real", "binary_targets") if config.get(k)) or "full"
        options += f", loss {config['loss']}"
        print(f"| {Path(run).name} | {ckpt['iteration']} | {options} | {dice} | "
              f"{' / '.join(f'{r:.2f}' for r in ratios)} | {np.std(ratios, ddof=1):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
