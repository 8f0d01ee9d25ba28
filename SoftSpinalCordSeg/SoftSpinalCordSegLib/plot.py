"""CSA along the cord as a PNG: CSA and centreline angles against S position, vertebral levels marked."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from .io import atomic_path
from .morphometry import CsaTable

LEVEL_PREFIXES = (("C", 7), ("T", 12), ("L", 5), ("S", 5))


def level_name(level: Optional[int]) -> str:
    """1 -> 'C1', 8 -> 'T1', 20 -> 'L1' (PAM50 numbering); '' when unknown."""
    if level is None:
        return ""
    number = int(level)
    for prefix, count in LEVEL_PREFIXES:
        if number <= count:
            return f"{prefix}{number}"
        number -= count
    return str(level)


def level_code(name: str) -> Optional[int]:
    """The inverse of level_name: 'C2' -> 2, 'T1' -> 8; None when the name is not a vertebra's."""
    codes = {level_name(code): code for code in range(1, sum(count for _, count in LEVEL_PREFIXES) + 1)}
    return codes.get(name.strip().upper())


@dataclass(frozen=True)
class CsaReference:
    """A known CSA to draw on the plot: a labelled line, and the range accepted around it (shaded)."""

    truth_mm2: float
    label: str
    accepted_mm2: Optional[Tuple[float, float]] = None


def plot_csa(table: CsaTable, path, title: Optional[str] = None, reference: Optional[CsaReference] = None) -> None:
    """Write the CSA plot of `table` to `path` (PNG, atomically)."""
    from matplotlib.figure import Figure  # the object API needs no display and no global state

    z = table.column("z_mm")
    figure = Figure(figsize=(8, 6), dpi=100)
    csa_axes, angle_axes = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    csa_axes.plot(z, table.column("csa_mm2"), marker=".", color="tab:blue", label="CSA (angle-corrected)")
    if reference is not None:
        csa_axes.axhline(reference.truth_mm2, color="black", linestyle="--", linewidth=1.2, label=reference.label)
        if reference.accepted_mm2 is not None:
            low, high = reference.accepted_mm2
            csa_axes.axhspan(low, high, color="tab:green", alpha=0.12, linewidth=0,
                             label=f"accepted {low:.1f} to {high:.1f} mm²")
    csa_axes.set_ylabel("CSA (mm²)")
    csa_axes.legend(loc="best", fontsize="small")
    angle_axes.plot(z, table.column("angle_ap_deg"), color="tab:orange", label="angle_AP (about A-P: lean to L)")
    angle_axes.plot(z, table.column("angle_rl_deg"), color="tab:green", label="angle_RL (about R-L: lean to A)")
    angle_axes.set_ylabel("angle (deg)")
    angle_axes.set_xlabel("S position of the slice (mm), inferior → superior")
    angle_axes.legend(loc="best", fontsize="small")
    named = _mark_levels(table, z, [csa_axes, angle_axes])
    for axes in (csa_axes, angle_axes):
        axes.grid(alpha=0.3)
    # the level names sit just above the panel: the title goes above them
    csa_axes.set_title(title or "Cord cross-sectional area along the cord", pad=16 if named else 6)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(str(temporary), format="png")


def _mark_levels(table: CsaTable, z: np.ndarray, axes_list) -> bool:
    """Shade every other vertebral level and name each one at the top of the CSA panel; whether any was."""
    levels = [row["level"] for row in table.rows]
    known = [level for level in levels if level is not None]
    if not known:
        return False
    for rank, level in enumerate(sorted(set(known))):
        positions = z[[value == level for value in levels]]
        low, high = positions.min(), positions.max()
        for axes in axes_list:
            if rank % 2 == 0:
                axes.axvspan(low, high, color="grey", alpha=0.12, linewidth=0)
        axes_list[0].text((low + high) / 2, 1.0, level_name(level), transform=axes_list[0].get_xaxis_transform(),
                          ha="center", va="bottom", fontsize="small")
    return True
