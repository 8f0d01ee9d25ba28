"""CSV in the layout of SCT 7's `sct_process_segmentation` (`--format sct`), so scripts written for SCT read ours.

Columns, in SCT's order: Timestamp, SCT Version (here `softseg <version>`), Filename (the measured mask's
absolute path, as SCT writes it), Slice (I->S) (slice index
counted from the inferior end of the grid, as SCT numbers slices after reorienting to RPI; a range `low:high`
in a summary row), VertLevel, DistancePMJ (left empty: no PMJ distance is computed), then MEAN(<metric>) and
STD(<metric>) for area, angle_AP, angle_RL, diameter_AP, diameter_AP_ellipse, diameter_RL, eccentricity,
orientation and solidity, and SUM(length). The metrics are ours, which share SCT's definitions (morphometry.py):
one row per slice (as SCT's `-perslice 1`; STD is 0 and SUM(length) the slice's own length) or one row per
summary (`--perlevel`, `--vert`, `--slices`; STD is the population SD, as SCT's).
"""

from __future__ import annotations

import csv
import datetime
import os
from typing import List, Optional

from . import __version__
from .errors import InputError
from .morphometry import Table, _format

SCT_METRICS = [  # (SCT's name, ours)
    ("area", "csa_mm2"), ("angle_AP", "angle_ap_deg"), ("angle_RL", "angle_rl_deg"),
    ("diameter_AP", "diameter_ap_mm"), ("diameter_AP_ellipse", "diameter_ap_ellipse_mm"),
    ("diameter_RL", "diameter_rl_mm"), ("eccentricity", "eccentricity"), ("orientation", "orientation_deg"),
    ("solidity", "solidity"),
]
CSA_FORMATS = ("default", "sct")  # the layouts of a CSA CSV: softseg's own, SCT's
PREFIX_COLUMNS = ["Timestamp", "SCT Version", "Filename", "Slice (I->S)", "VertLevel", "DistancePMJ"]
SCT_COLUMNS = PREFIX_COLUMNS + [f"{stat}({name})" for name, _ in SCT_METRICS for stat in ("MEAN", "STD")] + ["SUM(length)"]


def check_csa_format(csa_format: str) -> None:
    if csa_format not in CSA_FORMATS:
        raise InputError(f"--format must be one of {', '.join(CSA_FORMATS)}, not {csa_format!r}")


def sct_rows(table: Table, filename: str, timestamp: Optional[str] = None) -> List[dict]:
    """The rows of a per-slice CsaTable or of its summary (CsaTable.summarize) under SCT's column names."""
    stamp = timestamp or datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    common = {"Timestamp": stamp, "SCT Version": f"softseg {__version__}", "Filename": os.path.abspath(str(filename)), "DistancePMJ": None}
    per_slice = "csa_mm2" in table.columns
    rows = []
    for row in sorted(table.rows, key=lambda item: item["slice_is"]) if per_slice else table.rows:
        out = dict(common)
        if per_slice:
            out["Slice (I->S)"], out["VertLevel"] = row["slice_is"], row["level"]
            for name, ours in SCT_METRICS:
                out[f"MEAN({name})"] = row[ours]
                out[f"STD({name})"] = None if row[ours] is None else 0.0
            out["SUM(length)"] = row["length_mm"]
        else:
            out["Slice (I->S)"], out["VertLevel"] = row.get("slices_is", row["slices"]), row["level"]
            for name, ours in SCT_METRICS:
                out[f"MEAN({name})"], out[f"STD({name})"] = row[f"{ours}_mean"], row[f"{ours}_sd"]
            out["SUM(length)"] = row["length_mm_sum"]
        rows.append(out)
    return rows


def write_sct_csv(table: Table, path, filename: str) -> None:
    """Write `table` (per slice, or a summary) as SCT's CSV, atomically."""
    from .io import atomic_path

    with atomic_path(path) as temporary, open(temporary, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(SCT_COLUMNS)
        for row in sct_rows(table, filename):
            writer.writerow([_format(row.get(name)) for name in SCT_COLUMNS])
