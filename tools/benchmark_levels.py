"""Time --levels auto adds: disc detection, the levels of the CSA table's slices and the disc label image, on the 1 mm
sagittal cervical T2w of real/amu_test001 (384x185x52 voxels) with its manual cord mask.

    OMP_NUM_THREADS=2 python tools/benchmark_levels.py [--data DIR] [--repeats 5]
"""

import argparse
import time
from pathlib import Path

import numpy as np

from SoftSpinalCordSegLib.discs import levels_from_discs
from SoftSpinalCordSegLib.io import load_mask, load_volume
from SoftSpinalCordSegLib.morphometry import compute_csa
from SoftSpinalCordSegLib.vertebrae import detect_discs, disc_label_image


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1] / ".." / "shared" / "data")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    folder = args.data / "real" / "amu_test001"
    image = load_volume(folder / "sub-test001_T2w.nii.gz")
    mask = load_mask(folder / "sub-test001_T2w_seg-manual.nii.gz", image)
    table = compute_csa(mask.array, mask.affine)  # measured with or without levels: not counted
    centres = np.column_stack([table.column(name) for name in ("x_mm", "y_mm", "z_mm")])
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        labelling = detect_discs(image.array, image.affine, mask.array)
        if labelling.ok:
            levels_from_discs(labelling.level_points(), centres)
        disc_label_image(labelling, image.array.shape, image.affine)
        times.append(time.perf_counter() - start)
    shape = "x".join(map(str, image.array.shape))
    print(f"--levels auto adds {np.median(times):.2f} s (median of {args.repeats}; min {min(times):.2f}, "
          f"max {max(times):.2f}) on {shape} voxels of 1 mm ({'numbered' if labelling.ok else 'refused'})")


if __name__ == "__main__":
    main()
