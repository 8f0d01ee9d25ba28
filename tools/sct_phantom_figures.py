"""Figures of the SCT phantom cases (Testing/test_sct_phantoms.py): per case, the largest error of each diameter
against the truth and the largest change from one slice to the next, both in % of the truth, and CSA / angle
errors. Run: python tools/sct_phantom_figures.py"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Testing"))
from test_sct_phantoms import SCT_CASES, SHAPE_CASES, sct_phantom, truth  # noqa: E402

from SoftSpinalCordSegLib.morphometry import compute_csa  # noqa: E402

COLUMNS = {"diameter_AP": "diameter_ap_mm", "diameter_AP_ellipse": "diameter_ap_ellipse_mm", "diameter_RL": "diameter_rl_mm"}


def main() -> None:
    cases = [(name, parameters) for name, parameters, _ in SCT_CASES] + [("range", p) for p in SHAPE_CASES]
    print(f"{'case':64s} {'CSA err':>8s} " + " ".join(f"{m:>22s}" for m in COLUMNS) + "  angle err")
    for name, parameters in cases:
        table = compute_csa(*sct_phantom(**parameters))
        exact = truth(thickness=parameters.get("spacing", (1, 1, 1))[2], **parameters)
        label = f"{name}: {parameters['shape']} {parameters.get('spacing', (1, 1, 1))} RL{parameters.get('angle_rl', 0)} AP{parameters.get('angle_ap', 0)}"
        cells = []
        for metric, column in COLUMNS.items():
            values = table.column(column)
            error = 100 * np.abs(values - exact[metric]).max() / exact[metric]
            jump = 100 * np.abs(np.diff(values)).max() / exact[metric] if len(values) > 1 else 0.0
            cells.append(f"{error:5.2f}% (jump {jump:4.2f}%)")
        csa = 100 * np.abs(table.column("csa_mm2") - exact["area"]).max() / exact["area"]
        angle = max(np.abs(table.column("angle_ap_deg") - exact["angle_AP"]).max(),
                    np.abs(table.column("angle_rl_deg") - exact["angle_RL"]).max())
        print(f"{label:64s} {csa:7.2f}% " + " ".join(f"{c:>22s}" for c in cells) + f"  {angle:.2f} deg")


if __name__ == "__main__":
    main()
