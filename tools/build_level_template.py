"""Build SoftSpinalCordSegLib/level_template.py: the disc profile, cord area and disc positions along the cord of
the PAM50 T2 template (PAM50_small: brainstem to conus, 1x1x2 mm, with its vertebral levels).

    python tools/build_level_template.py [DATA_DIR]   (default ../shared/data)
"""

import sys
from pathlib import Path

import numpy as np

from SoftSpinalCordSegLib.io import load_labels, load_mask, load_volume
from SoftSpinalCordSegLib.vertebrae import (REFINE_BAND_MM, STEP_MM, cord_centreline, disc_arcs_from_level_map,
                                            disc_profile)

OUTPUT = Path(__file__).resolve().parents[1] / "SoftSpinalCordSeg" / "SoftSpinalCordSegLib" / "level_template.py"


def _number(value: float, digits: int) -> str:
    return "NAN" if not np.isfinite(value) else repr(round(float(value), digits))


def discs_beyond_the_cord(levels, affine, centreline, discs):
    """Disc (first - 1) where the level map's level above the first disc begins (disc 1, the top of C1) and disc
    (last + 1) where the level below the last disc ends, as arcs along the centreline extended straight on
    (PAM50_small's slices are axial and the cord's ends are near vertical)."""
    affine = np.asarray(affine, dtype=float)
    voxels = np.argwhere(levels > 0)
    values = levels[tuple(voxels.T)]
    world_s = (voxels @ affine[:3, :3].T + affine[:3, 3])[:, 2]
    half_slice = abs(affine[2, 2]) / 2
    first, last = min(discs), max(discs)
    top_of_first_level = world_s[values == first - 1].max() + half_slice
    bottom_of_last_level = world_s[values == last].min() - half_slice
    end = (len(centreline) - 1) * STEP_MM
    return {first - 1: centreline.points[0, 2] - top_of_first_level,
            last + 1: end + centreline.points[-1, 2] - bottom_of_last_level}


def main(data_dir: Path) -> None:
    folder = data_dir / "labels" / "PAM50_small"
    image = load_volume(folder / "PAM50_small_t2.nii.gz")
    cord = load_mask(folder / "PAM50_small_cord.nii.gz", image)
    levels = load_labels(folder / "PAM50_small_levels.nii.gz", image)
    centreline = cord_centreline(cord.array, image.affine)
    profile, _ = disc_profile(image.array, image.affine, centreline)
    near, _ = disc_profile(image.array, image.affine, centreline, REFINE_BAND_MM)
    discs = disc_arcs_from_level_map(levels.array, image.affine, centreline)
    beyond = discs_beyond_the_cord(levels.array, image.affine, centreline, discs)
    lines = [
        '"""Disc profile, cord area and discs along the cord of the PAM50 T2 template (PAM50_small, MIT, NeuroPoly),',
        'from its top (C1) down, every STEP_MM; NAN where unknown. Written by tools/build_level_template.py; do not edit."""',
        "",
        "NAN = float(\"nan\")",
        f"STEP_MM = {STEP_MM}",
        f"PROFILE = [{', '.join(_number(value, 4) for value in profile)}]",
        f"REFINE_PROFILE = [{', '.join(_number(value, 4) for value in near)}]",
        f"AREA = [{', '.join(_number(value, 2) for value in centreline.area_mm2)}]",
        f"DISCS = {{{', '.join(f'{number}: {arc:.1f}' for number, arc in sorted(discs.items()))}}}",
        "# the first and last level boundaries of the level map beyond the cord's ends (arcs extended straight on):",
        "# not detected as discs, they give the cord above the top disc and below the last one its level",
        f"BEYOND = {{{', '.join(f'{number}: {arc:.1f}' for number, arc in sorted(beyond.items()))}}}",
        "",
    ]
    OUTPUT.write_text("\n".join(lines))
    print(f"wrote {OUTPUT}: {len(profile)} points, discs {sorted(discs)}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / ".." / "shared" / "data")
