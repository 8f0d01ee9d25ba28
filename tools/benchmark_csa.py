"""Accuracy and speed of the CSA measurement on analytic phantoms (true cross-section 80 mm²).

Prints, per case, the interior slices' CSA range, the largest error and the time of compute_csa (the first
case, 320 slices, also pays the imports a fresh `softseg csa` pays). Run: python tools/benchmark_csa.py
"""

from __future__ import annotations

import time

import numpy as np

from SoftSpinalCordSegLib.morphometry import compute_csa
from SoftSpinalCordSegLib.phantom import CordPhantom, is_interior, make_phantom_mask

CASES = [
    # (label, phantom, spacing, axcodes, oblique_deg); the first one's time includes the imports (a fresh `csa`)
    ("speed: 320 slices, tilt AP 10, 0.8 iso", CordPhantom(tilt_ap_deg=10, length_mm=256), (0.8,) * 3, "RAS", 0),
    ("done-when tilt AP 30, 0.8 iso, RAS", CordPhantom(tilt_ap_deg=30, length_mm=50), (0.8,) * 3, "RAS", 0),
    ("done-when tilt AP 30, 0.8 iso, LPS", CordPhantom(tilt_ap_deg=30, length_mm=50), (0.8,) * 3, "LPS", 0),
    ("done-when tilt AP 30, 0.8 iso, PSR", CordPhantom(tilt_ap_deg=30, length_mm=50), (0.8,) * 3, "PSR", 0),
    ("done-when tilt AP 30, 0.8 iso, LAS (left-handed)", CordPhantom(tilt_ap_deg=30, length_mm=50), (0.8,) * 3, "LAS", 0),
    ("done-when tilt AP 30, 0.8 iso, oblique 12", CordPhantom(tilt_ap_deg=30, length_mm=50), (0.8,) * 3, "LPS", 12),
    ("done-when tilt AP 30, 0.8 iso, oblique 20", CordPhantom(tilt_ap_deg=30, length_mm=50), (0.8,) * 3, "RAS", 20),
    ("tilt RL 30, 0.8 iso", CordPhantom(tilt_rl_deg=30, length_mm=60), (0.8,) * 3, "RAS", 0),
    ("tilt AP 35, 0.5 iso", CordPhantom(tilt_ap_deg=35, length_mm=60), (0.5,) * 3, "RAS", 0),
    ("tilt AP 20 + RL 20, 1 iso", CordPhantom(tilt_ap_deg=20, tilt_rl_deg=20, length_mm=60), (1.0,) * 3, "RAS", 0),
    ("tilt AP 15, axial 0.5x0.5x5", CordPhantom(tilt_ap_deg=15, length_mm=60), (0.5, 0.5, 5.0), "RAS", 0),
    ("tilt RL 25, axial 0.5x0.5x5", CordPhantom(tilt_rl_deg=25, length_mm=60), (0.5, 0.5, 5.0), "RAS", 0),
    ("tilt AP 30, sagittal 3x0.8x0.8", CordPhantom(tilt_ap_deg=30, length_mm=60), (3.0, 0.8, 0.8), "PSR", 0),
    ("curved R 60, 0.8 iso", CordPhantom(curve_radius_mm=60, length_mm=60), (0.8,) * 3, "RAS", 0),
    ("curved R 60 + RL 15, axial 0.5x0.5x5", CordPhantom(curve_radius_mm=60, tilt_rl_deg=15, length_mm=60), (0.5, 0.5, 5.0), "LPS", 0),
]


def main() -> None:
    print(f"{'case':52s} {'slices':>6s} {'CSA min':>8s} {'CSA max':>8s} {'max err':>8s} {'time':>7s}")
    for label, phantom, spacing, axcodes, oblique in CASES:
        mask, affine = make_phantom_mask(phantom, spacing, axcodes, oblique)
        start = time.perf_counter()
        table = compute_csa(mask, affine)
        seconds = time.perf_counter() - start
        interior = is_interior(phantom, table.column("z_mm"), 10.0)
        csa = table.column("csa_mm2")[interior]
        error = np.abs(csa - phantom.area_mm2).max()
        print(f"{label:52s} {interior.sum():6d} {csa.min():8.2f} {csa.max():8.2f} "
              f"{error:5.2f} mm² ({100 * error / phantom.area_mm2:.2f}%) {seconds:6.3f}s")


if __name__ == "__main__":
    main()
