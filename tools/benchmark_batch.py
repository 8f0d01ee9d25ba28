"""Throughput of `softseg batch`: images per minute with 1 and 2 local Dask workers, memory per worker, and
how much faster a re-run is when every output is already there.

    python tools/benchmark_batch.py [--subjects 4] [--stand-in] [--keep DIR] [--no-both-polarities]

The cohort is unf01's T1w, T2w and T2star (from $SOFTSEG_DATA or ../shared/data) copied under several subject
names. With the shipped model not installed yet, or with --stand-in, each worker runs the real pipeline
(load, save, CSA, QC) with a stand-in model that returns an analytic soft cord: that measures the
orchestration and the non-model work only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "SoftSpinalCordSeg"))

import numpy as np  # noqa: E402

CONTRASTS = ("T1w", "T2w", "T2star")


def stand_in_model(array, affine, **_):
    """An elliptic soft cord of 60 mm2 along S through the image centre (exact partial volume)."""
    from SoftSpinalCordSegLib.phantom import CordPhantom, soft_mask

    shifted = np.array(affine, dtype=float)
    shifted[:3, 3] -= affine[:3, :3] @ ((np.array(array.shape) - 1) / 2) + affine[:3, 3]
    return soft_mask(CordPhantom(area_mm2=60.0, length_mm=1e4), array.shape, shifted)


def segment_file_with_stand_in(image_path, output_path, **options):
    """pipeline.segment_file with the stand-in model (this function is pickled by value to the workers)."""
    from SoftSpinalCordSegLib import inference
    from SoftSpinalCordSegLib.pipeline import segment_file

    inference.segment_image = stand_in_model
    return segment_file(image_path, output_path, **options)


def build_cohort(root: Path, subjects: int) -> int:
    data = Path(os.environ.get("SOFTSEG_DATA", REPO.parent / "shared" / "data")) / "real" / "unf01"
    if not data.is_dir():
        sys.exit(f"unf01 not found at {data} (set SOFTSEG_DATA)")
    for number in range(1, subjects + 1):
        folder = root / f"sub-{number:02d}" / "anat"
        folder.mkdir(parents=True)
        for contrast in CONTRASTS:
            shutil.copy(data / f"sub-unf01_{contrast}.nii.gz", folder / f"sub-{number:02d}_{contrast}.nii.gz")
    (root / "dataset_description.json").write_text('{"Name": "benchmark", "BIDSVersion": "1.9.0"}\n')
    return subjects * len(CONTRASTS)


def model_installed() -> bool:
    from SoftSpinalCordSegLib import inference
    from SoftSpinalCordSegLib.errors import ModelNotInstalledError

    try:
        inference.load_network("cpu")
    except ModelNotInstalledError as error:
        print(f"no model installed ({error}): using the stand-in model")
        return False
    print(f"model: {inference.model_dir() / inference.WEIGHTS_NAME}")
    return True


def run(root: Path, output: Path, workers: int, segment_file, both_polarities=True):
    from SoftSpinalCordSegLib.batch import run_batch

    start = time.perf_counter()
    result = run_batch(root, output, workers=workers, segment_file=segment_file, device="cpu", quiet=True,
                       both_polarities=both_polarities)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=4, help="subjects of 3 contrasts each (default 4)")
    parser.add_argument("--stand-in", action="store_true", help="use the stand-in model even if the shipped one is installed")
    parser.add_argument("--keep", metavar="DIR", help="build the cohort and outputs here and keep them")
    parser.add_argument("--both-polarities", action=argparse.BooleanOptionalAction, default=True,
                        help="--no-both-polarities times `softseg batch --no-both-polarities` (one reading per slice)")
    args = parser.parse_args()

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="softseg_batch_bench_"))
    cohort = work / "cohort"
    count = build_cohort(cohort, args.subjects)
    real_model = not args.stand_in and model_installed()
    segment_file = None if real_model else segment_file_with_stand_in
    model = "installed model" if real_model else "stand-in model"
    print(f"{count} images (unf01 T1w/T2w/T2star, 131x141x16 voxels of 1 mm), {model}, {os.cpu_count()} CPU cores")
    try:
        for workers in (1, 2):
            output = work / f"out_{workers}"
            result, seconds = run(cohort, output, workers, segment_file, args.both_polarities)
            failed = [f"{r.image.path}: {r.reason}" for r in result.results if r.status == "failed"]
            if failed:
                sys.exit("failures:\n" + "\n".join(failed))
            busy = sum(r.seconds for r in result.results)
            per_worker = {}
            for record in result.results:
                per_worker[record.worker] = max(per_worker.get(record.worker, 0.0), record.peak_rss_mb)
            memory = ", ".join(f"{mb:.0f}" for mb in sorted(per_worker.values()))
            print(f"{workers} worker(s): {count} images in {seconds:.1f} s (cluster start included) = "
                  f"{60 * count / seconds:.1f} images/min; {busy / count:.2f} s of work per image; "
                  f"peak memory per worker {memory} MB")
            rerun, rerun_seconds = run(cohort, output, workers, segment_file, args.both_polarities)
            assert rerun.count("skipped") == count, "the re-run should skip every image"
            print(f"   re-run with every output present: {rerun_seconds:.2f} s ({seconds / rerun_seconds:.0f}x faster)")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
