"""CSA, angles and shape on analytic phantoms of known cross-section, in every orientation and voxel size."""

from __future__ import annotations

import math

import numpy as np
import pytest

from SoftSpinalCordSegLib.errors import InputError
from SoftSpinalCordSegLib.morphometry import compute_csa, dice, parse_range, slice_axis
from SoftSpinalCordSegLib.phantom import CordPhantom, is_interior, make_phantom_mask

INTERIOR_MARGIN_MM = 10.0  # slices this far inside the caps are away from the ends


def measure(phantom, spacing, axcodes="RAS", oblique_deg=0.0):
    mask, affine = make_phantom_mask(phantom, spacing, axcodes, oblique_deg)
    table = compute_csa(mask, affine)
    interior = is_interior(phantom, table.column("z_mm"), INTERIOR_MARGIN_MM)
    assert interior.sum() >= 3, "too few interior slices to test"
    return table, interior


@pytest.mark.parametrize(
    "tilt_ap, tilt_rl, spacing",
    [
        (0, 0, (1.0, 1.0, 1.0)),
        (30, 0, (0.8, 0.8, 0.8)),
        (0, 30, (0.8, 0.8, 0.8)),
        (35, 0, (0.5, 0.5, 0.5)),
        (20, 20, (1.0, 1.0, 1.0)),
        (15, 0, (0.5, 0.5, 5.0)),  # axial stack of thick slices
        (0, 25, (0.5, 0.5, 5.0)),
        (30, 0, (3.0, 0.8, 0.8)),  # sagittal stack: thick R-L voxels
        (0, 20, (3.0, 0.8, 0.8)),
    ],
)
def test_straight_tilted_cord_csa_and_angles(tilt_ap, tilt_rl, spacing):
    phantom = CordPhantom(area_mm2=80.0, tilt_ap_deg=tilt_ap, tilt_rl_deg=tilt_rl, length_mm=60.0)
    table, interior = measure(phantom, spacing)
    csa = table.column("csa_mm2")[interior]
    np.testing.assert_allclose(csa, 80.0, rtol=0.02)
    # SCT's angles, named by their rotation axis: about R-L for a lean towards A, about A-P (towards L) for R
    np.testing.assert_allclose(table.column("angle_rl_deg")[interior], tilt_ap, atol=2.0)
    np.testing.assert_allclose(table.column("angle_ap_deg")[interior], -tilt_rl, atol=2.0)
    # Without the angle correction the 30-35 degree cases would be 15-22% too large: the test can fail.
    rl, ap = phantom.semi_axes
    tolerance = 0.02 if max(spacing[:2]) <= 1.0 else 0.04  # sagittal stacks: 3 mm pixels across the cord
    for name, truth in (("diameter_rl_mm", 2 * rl), ("diameter_ap_ellipse_mm", 2 * ap),
                        ("diameter_ap_mm", band_chord_mm(rl, ap))):
        values = table.column(name)[interior]
        np.testing.assert_allclose(values, truth, rtol=tolerance, err_msg=name)
        assert np.abs(np.diff(values)).max() < 0.02 * truth, name  # smooth from slice to slice
    eccentricity = math.sqrt(1 - 1 / phantom.aspect**2)
    np.testing.assert_allclose(table.column("eccentricity")[interior], eccentricity, atol=0.02)
    assert np.all(table.column("solidity")[interior] > 0.99)  # an ellipse is convex
    assert np.all(np.abs(table.column("orientation_deg")[interior]) < 2.0)


def band_chord_mm(rl, ap, band_mm=3.0):
    """The mean AP chord of an ellipse (semi-axes rl, ap) over an R-L band through its centre: SCT 7's
    diameter_AP of a perfect ellipse (2 ap at the centre, less off it)."""
    offsets = np.linspace(-band_mm / 2, band_mm / 2, 3001)
    return float(np.mean(2 * ap * np.sqrt(1 - (offsets / rl) ** 2)))


@pytest.mark.parametrize("spacing, tilt_rl", [((0.8, 0.8, 0.8), 0.0), ((0.5, 0.5, 5.0), 15.0)])
def test_curved_cord_csa_and_angle_along_the_arc(spacing, tilt_rl):
    radius = 60.0
    phantom = CordPhantom(area_mm2=80.0, curve_radius_mm=radius, tilt_rl_deg=tilt_rl, length_mm=60.0)
    table, interior = measure(phantom, spacing)
    np.testing.assert_allclose(table.column("csa_mm2")[interior], 80.0, rtol=0.02)
    if tilt_rl == 0:
        expected_ap = np.degrees(np.arcsin(table.column("z_mm")[interior] / radius))
        np.testing.assert_allclose(table.column("angle_rl_deg")[interior], expected_ap, atol=2.0)


def test_orientations_give_the_same_table():
    """RAS, LPS, PSR and left-handed LAS/RPI files of one cord give one table; an oblique grid agrees too."""
    phantom = CordPhantom(area_mm2=80.0, tilt_ap_deg=30.0, length_mm=50.0)
    reference, interior = measure(phantom, (0.8, 0.8, 0.8), "RAS")
    columns = [name for name in reference.columns if name not in ("slice", "level")]
    for axcodes in ("LPS", "PSR", "LAS", "RPI"):
        table, _ = measure(phantom, (0.8, 0.8, 0.8), axcodes)
        assert len(table) == len(reference)
        for name in columns:
            np.testing.assert_allclose(table.column(name), reference.column(name), atol=1e-3, err_msg=f"{axcodes} {name}")
    oblique, oblique_interior = measure(phantom, (0.8, 0.8, 0.8), "LPS", oblique_deg=12.0)
    z = oblique.column("z_mm")[oblique_interior]
    for name, tolerance in (("csa_mm2", 1.6), ("angle_ap_deg", 2.0), ("angle_rl_deg", 2.0)):
        expected = np.interp(z, reference.column("z_mm"), reference.column(name))
        np.testing.assert_allclose(oblique.column(name)[oblique_interior], expected, atol=tolerance, err_msg=name)


def test_rows_follow_physical_position_not_array_order():
    phantom = CordPhantom(area_mm2=80.0, tilt_ap_deg=10.0, length_mm=30.0)
    forward, _ = measure(phantom, (1.0, 1.0, 1.0), "RAS")
    flipped, _ = measure(phantom, (1.0, 1.0, 1.0), "RAI")  # k runs from S to I
    assert np.all(np.diff(flipped.column("z_mm")) > 0)
    np.testing.assert_array_equal(flipped.column("slice"), forward.column("slice")[::-1])


def test_binary_mask_is_measured_too():
    phantom = CordPhantom(area_mm2=80.0, tilt_rl_deg=20.0, length_mm=50.0)
    mask, affine = make_phantom_mask(phantom, (0.5, 0.5, 0.5))
    table = compute_csa(mask >= 0.5, affine)
    interior = is_interior(phantom, table.column("z_mm"), INTERIOR_MARGIN_MM)
    assert abs(table.column("csa_mm2")[interior].mean() - 80.0) < 0.03 * 80.0


def test_phantom_partial_volume_is_exact():
    """The phantom's soft mask integrates to the analytic volume (area x length / cos(tilt))."""
    phantom = CordPhantom(area_mm2=80.0, tilt_ap_deg=30.0, length_mm=40.0)
    mask, affine = make_phantom_mask(phantom, (0.8, 0.8, 0.8))
    volume = mask.sum() * abs(np.linalg.det(affine[:3, :3]))
    expected = 80.0 * 40.0 / math.cos(math.radians(30.0))
    assert abs(volume - expected) < 0.003 * expected
    assert mask.min() == 0.0 and mask.max() == 1.0
    assert np.any((mask > 0.05) & (mask < 0.95))  # genuinely soft at the boundary


def test_phantom_area_inside_an_inset_matches_a_fine_raster():
    """The cross-section shrunk by an inset (how raters draw inside the edge) against a 0.02 mm raster of
    the points at least that far inside the ellipse."""
    from scipy import ndimage

    phantom = CordPhantom(area_mm2=80.0, aspect=1.4)
    step = 0.02
    ap_mm, rl_mm = np.mgrid[-7:7:step, -7:7:step]
    axial_plane = np.column_stack([rl_mm.ravel(), ap_mm.ravel(), np.zeros(rl_mm.size)])
    inside = phantom.inside(axial_plane).reshape(rl_mm.shape)
    depth_mm = ndimage.distance_transform_edt(inside) * step
    for inset in (0.0, 0.5, 0.8, 1.5):
        raster = (depth_mm > inset).sum() * step**2
        assert abs(phantom.area_inside_mm2(inset) - raster) < 0.005 * 80.0, inset
    with pytest.raises(ValueError):
        phantom.area_inside_mm2(phantom.semi_axes[1])  # deeper than the flattest curvature: no parallel set


def test_levels_per_level_and_range_summaries():
    phantom = CordPhantom(area_mm2=80.0, length_mm=30.0)
    mask, affine = make_phantom_mask(phantom, (1.0, 1.0, 1.0))
    z_of_slice = affine[2, 2] * np.arange(mask.shape[2]) + affine[2, 3]
    levels = np.zeros(mask.shape, dtype=np.int32)
    levels[..., z_of_slice < 0] = 3  # inferior half: C3, superior half: C2 (labels only inside the cord)
    levels[..., z_of_slice >= 0] = 2
    levels[mask == 0] = 0
    table = compute_csa(mask, affine, levels)
    assert {row["level"] for row in table.rows} == {2, 3}
    per_level = table.summarize(per_level=True)
    assert [row["level"] for row in per_level.rows] == [2, 3]
    counts = {row["level"]: row["n_slices"] for row in per_level.rows}
    assert counts[2] == sum(row["level"] == 2 for row in table.rows)
    assert counts[2] + counts[3] == len(table)
    c2 = table.summarize(levels=(2, 2)).rows[0]
    assert c2["n_slices"] == counts[2] and c2["z_min_mm"] >= 0
    both = table.summarize(levels=(2, 3)).rows[0]
    values = table.column("csa_mm2")
    assert both["n_slices"] == len(table)
    assert both["csa_mm2_mean"] == pytest.approx(values.mean())
    assert both["csa_mm2_sd"] == pytest.approx(values.std())  # the population SD, as SCT's STD
    some = table.summarize(slices=(10, 14)).rows[0]
    assert some["n_slices"] == 5 and some["slices"] == "10:14"
    with pytest.raises(InputError):
        table.summarize(levels=(5, 6))


def test_summary_per_level_needs_levels():
    mask, affine = make_phantom_mask(CordPhantom(length_mm=20.0), (1.0, 1.0, 1.0))
    with pytest.raises(InputError, match="no vertebral level is known"):
        compute_csa(mask, affine).summarize(per_level=True)


def test_slice_axis_is_the_one_closest_to_axial():
    axial = np.diag([0.5, 0.5, 5.0, 1.0])
    sagittal_psr = np.array([[0, 0, 0.8, 0], [-0.8, 0, 0, 0], [0, 3.0, 0, 0], [0, 0, 0, 1.0]])
    assert slice_axis(axial) == 2
    assert slice_axis(sagittal_psr) == 1


def test_empty_mask_and_bad_ranges_are_input_errors():
    with pytest.raises(InputError):
        compute_csa(np.zeros((5, 5, 5)), np.eye(4))
    assert parse_range("2:3", "--vert") == (2, 3) and isinstance(parse_range("2:3", "--vert")[0], int)
    assert parse_range("4", "--vert") == (4, 4)
    for text in ("3:2", "a:b", "1:2:3", "0:inf", "nan:5", "2.9:3.9"):  # indices and levels are whole numbers
        with pytest.raises(InputError):
            parse_range(text, "--vert")


def test_vertebral_level_names_and_codes_are_inverse():
    from SoftSpinalCordSegLib.plot import level_code, level_name

    assert [level_name(code) for code in (1, 7, 8, 19, 20, 25)] == ["C1", "C7", "T1", "T12", "L1", "S1"]
    assert all(level_code(level_name(code)) == code for code in range(1, 30))
    assert level_code(" c2 ") == 2 and level_code("C8") is None and level_code("X1") is None


def test_csa_csv_reads_back_to_the_same_table(tmp_path):
    from SoftSpinalCordSegLib.morphometry import CsaTable

    mask = np.zeros((20, 20, 12), np.float32)
    mask[6:13, 5:14, :] = 1.0
    mask[5, 5:14, :] = 0.4  # partial-volume rim
    levels = np.zeros(mask.shape, np.int16)
    levels[..., :6], levels[..., 6:] = 3, 2
    table = compute_csa(mask, np.diag([0.8, 0.8, 2.0, 1.0]), levels=levels)
    table.write_csv(tmp_path / "csa.csv")
    read = CsaTable.read_csv(tmp_path / "csa.csv")
    assert len(read) == len(table)
    for written, reloaded in zip(table.rows, read.rows):
        assert reloaded["slice"] == written["slice"] and reloaded["level"] == written["level"]
        for name in ("z_mm", "csa_mm2", "angle_ap_deg", "angle_rl_deg", "diameter_ap_mm"):
            assert reloaded[name] == pytest.approx(written[name], abs=1e-6)


def test_dice_counts_the_overlap_of_two_masks():
    a = np.zeros((4, 4, 4), bool)
    b = a.copy()
    a[:2] = True  # 32 voxels
    b[1:3] = True  # 32 voxels, 16 shared
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(a, a) == 1.0 and dice(a, ~a) == 0.0
    assert dice(np.zeros(3, bool), np.zeros(3, bool)) == 1.0  # both empty: they agree


def cord_with_misread_slices():
    """5 mm axial slices of a 5 mm radius cord (78.5 mm²) with one swollen slice (index 3) and one shrunken
    slice (8), ending in a conus that tapers to 2 mm radius: (soft mask, affine)."""
    radii = [5, 5, 5, 6.2, 5, 5, 5, 5, 3.5, 5, 5, 5, 4.5, 4, 3, 2]
    yy, xx = np.mgrid[0:40, 0:40] - 19.5
    mask = np.stack([np.clip(r + 0.5 - np.hypot(yy, xx), 0, 1) for r in radii], axis=2).astype(np.float32)
    return mask, np.diag([1.0, 1.0, 5.0, 1.0])


@pytest.mark.parametrize("tilt, steep", [(30.0, False), (55.0, True)])
def test_steep_slices_are_those_the_cord_crosses_at_over_45_degrees(tilt, steep):
    """A straight cord tilted 30 degrees (A-P) and 20 (R-L) crosses the slices at 35 degrees; at 55 and 20, 56."""
    mask, affine = make_phantom_mask(CordPhantom(tilt_ap_deg=tilt, tilt_rl_deg=20.0, length_mm=30.0), (0.8, 0.8, 0.8))
    table = compute_csa(mask, affine)
    assert bool(table.steep_slices()) == steep
    assert table.steep_slices(limit_deg=25.0)  # every slice is over 25 degrees
    assert len(table.steep_slices()) in (0, len(table))


def test_suspect_slices_are_the_ones_that_break_from_their_neighbours():
    table = compute_csa(*cord_with_misread_slices())
    assert table.suspect_slices() == [3, 8]  # not the tapering conus, whose CSA falls by 20-55 % a slice
    assert table.suspect_slices(tolerance=0.6) == []  # the swollen slice is 54 % above, the shrunken one 50 % below
    flipped = compute_csa(*cord_with_misread_slices()[:1], np.diag([1.0, 1.0, -5.0, 1.0]))
    assert flipped.suspect_slices() == [3, 8]  # the file's indices, whichever way the slices run


@pytest.mark.parametrize("area_mm2, oversized", [(80.0, False), (130.0, True)])
def test_oversized_slices_are_those_over_a_healthy_adult_cord(area_mm2, oversized):
    """A run of 130 mm² slices agrees with its neighbours (no suspect slice) but is larger than a healthy cord."""
    mask, affine = make_phantom_mask(CordPhantom(area_mm2=area_mm2, length_mm=30.0), (0.5, 0.5, 2.0))
    table = compute_csa(mask, affine)
    assert table.suspect_slices() == []
    assert table.oversized_slices() == (sorted(int(row["slice"]) for row in table.rows) if oversized else [])


def test_orientation_summary_averages_axes_not_numbers():
    from SoftSpinalCordSegLib.morphometry import METRICS, CsaTable

    def summary(orientations):
        rows = [{**{metric: 1.0 for metric in METRICS}, "orientation_deg": value, "slice": index, "z_mm": float(index),
                 "level": None} for index, value in enumerate(orientations)]
        row = CsaTable(rows).summarize().rows[0]
        return row["orientation_deg_mean"], row["orientation_deg_sd"]

    mean, sd = summary([89.0, -89.0, 88.0, -88.0])  # a major axis along A-P, wobbling across the +-90 wrap
    assert abs(abs(mean) - 90.0) < 1e-6 and sd < 2.0  # not 0 +- 89
    mean, sd = summary([10.0, 20.0])
    assert mean == pytest.approx(15.0) and sd == pytest.approx(np.std([10.0, 20.0]), rel=0.05)


def test_the_shared_z_range_keeps_same_grid_slices_and_stays_clear_of_other_grids():
    """A quarter slice of slack: images of one grid (cord centres 0.04 mm apart) keep the same slices, and a grid
    shifted by half a slice does not decide by tenths of a mm which end slices the others keep."""
    from SoftSpinalCordSegLib.morphometry import CsaTable, shared_z_range

    def table(z):
        return CsaTable([{"slice": i, "z_mm": v, "csa_mm2": 70.0} for i, v in enumerate(z)])

    grid = np.arange(10) * 5.0
    low, high = shared_z_range([table(grid), table(grid + np.r_[0.04, np.zeros(8), -0.03])])
    assert low <= 0 and high >= 45 and low > -5 and high < 50
    low, high = shared_z_range([table(grid), table(grid[:-1] + 2.5)])  # ends at 42.5: 45 is out, 40 in
    assert 40 < high < 45 - 1.2 and low > 0
    assert shared_z_range([table([12.0]), table(grid)]) == (10.75, 13.25)  # a single slice: the slack of the others
    assert shared_z_range([table(np.r_[grid, np.nan]), table(grid)]) == pytest.approx((-1.25, 46.25))  # NaN ignored
