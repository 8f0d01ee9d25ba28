"""CSA drift across model releases: one row per release in docs/model/csa_drift.csv.

    python tools/csa_drift.py                       # the change between releases, per image and per contrast
    python tools/csa_drift.py --add "release 2"     # measure the installed model and append its row

Each row holds the release's name, date and weights SHA-256, then the mean CSA (mm²) that the release measures
on each shared validation image, over the slices that image's manual mask covers (tools/validation_set.py).
A release that keeps the weights but changes how the product reads them (release 6: each slice read in both
polarities) gets a row of its own. Testing/test_drift.py fails when the shipped weights have no row, or when their
latest row no longer matches what they measure.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from validation_set import IMAGES, default_data, measure  # noqa: E402

from SoftSpinalCordSegLib import inference  # noqa: E402

DRIFT_CSV = Path(__file__).resolve().parents[1] / "docs" / "model" / "csa_drift.csv"
FIXED_COLUMNS = ["release", "date", "weights_sha256"]
SAME_CSA_MM2 = 0.3  # a row within this of the latest one of the same weights adds nothing (Testing/test_drift.py's tolerance)


def read_rows(path=DRIFT_CSV):
    if not Path(path).is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def shipped_sha256() -> str:
    return inference.sha256_of(inference.model_dir() / inference.WEIGHTS_NAME)


def measure_release(data: Path) -> dict:
    """{image name: mean CSA (mm²) on the manual's slices} of the installed model, for the images present."""
    return {item.name: round(measure(item, data)["csa_model"], 2) for item in IMAGES if (data / item.image).is_file()}


def append_row(release: str, values: dict, date=None, path=DRIFT_CSV):
    rows = read_rows(path)
    row = {"release": release, "date": date or datetime.date.today().isoformat(), "weights_sha256": shipped_sha256(),
           **{name: f"{value:.2f}" for name, value in values.items()}}
    columns = FIXED_COLUMNS + [item.name for item in IMAGES]
    with open(path, "w", newline="") as f:
        out = csv.DictWriter(f, columns, restval="")
        out.writeheader()
        out.writerows(rows + [row])


def latest_row(rows, sha256: str):
    """The latest row of these weights (a release may read the same weights anew), or None."""
    same_weights = [r for r in rows if r["weights_sha256"] == sha256]
    return same_weights[-1] if same_weights else None


def matching_release(values: dict, rows, sha256: str) -> str:
    """The name of the latest row of these weights when it holds these values (within SAME_CSA_MM2), else ""."""
    latest = latest_row(rows, sha256)
    if latest is None:
        return ""
    same = [bool(latest.get(name)) and abs(float(latest[name]) - csa) <= SAME_CSA_MM2 for name, csa in values.items()]
    return latest["release"] if same and all(same) else ""


def contrast_of(name: str) -> str:
    """The contrast of a validation image's name ('unf01 T2w' -> 'T2w', 'sub-9584 T2*w run-1' -> 'T2*w')."""
    return name.split()[1] if name.startswith(("unf01", "sub-")) and len(name.split()) > 1 else name.split()[-1]


def print_drift(rows):
    """Per image and per contrast: each release's CSA and its change from the release before."""
    if not rows:
        print(f"no release recorded in {DRIFT_CSV}")
        return
    images = [item.name for item in IMAGES]
    header = " | ".join(r["release"] for r in rows)
    print(f"| image | {header} | change, last release |\n|" + " --- |" * (len(rows) + 2))
    by_contrast = {}
    for name in images:
        values = [float(r[name]) if r.get(name) else np.nan for r in rows]
        change = values[-1] / values[-2] - 1 if len(values) > 1 else np.nan
        by_contrast.setdefault(contrast_of(name), []).append(change)
        print(f"| {name} | " + " | ".join(f"{v:.1f}" for v in values) + f" | {change:+.1%} |")
    if len(rows) > 1:
        print(f"\nMean change per contrast, {rows[-2]['release']} -> {rows[-1]['release']}:")
        for contrast, changes in by_contrast.items():
            print(f"  {contrast}: {np.nanmean(changes):+.1%} ({len(changes)} image{'s' * (len(changes) > 1)})")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=default_data())
    p.add_argument("--add", metavar="RELEASE", help="measure the installed model and append its row under this name")
    p.add_argument("--date", help="with --add: the release's date (default today)")
    args = p.parse_args(argv)
    if args.add:
        values = measure_release(Path(args.data))
        if not values:
            p.error(f"no validation image found under {args.data}: nothing to measure")
        unchanged = matching_release(values, read_rows(), shipped_sha256())
        if unchanged:
            p.error(f"the installed model measures what its row '{unchanged}' holds: nothing to add")
        append_row(args.add, values, args.date)
    print_drift(read_rows())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
