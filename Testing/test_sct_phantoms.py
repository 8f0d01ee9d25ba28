"""SCT's own morphometry test cases (spinalcordtoolbox testing/api/test_process_seg.py: its `dummy_segmentation`
shapes, sizes, voxel sizes and tilts, and the 5 % tolerance of its assertions), rebuilt here as exact
partial-volume phantoms, measured in `--format sct` and read back by SCT's column names.

SCT's rectangle of "radius" r spans 2r + 1 one-millimetre pixels (its theoretical CSA (2a + 1)(2b + 1)); its
ellipse has semi-axes (radius_RL, radius_AP). Angles follow SCT: angle_RL is the rotation about the R-L axis
(the cord leaning towards A going up), angle_AP about the A-P axis (leaning towards L). Expected values are the
geometric truth of these exact shapes; where SCT's table holds a value of its own pixelated, re-rotated phantom
(diameter_AP 9.41 for an ellipse of AP diameter 10, angle_RL -11.5 for -10), the truth is used instead.
Beyond SCT's 5 %, every diameter must be within 2 % of the truth and vary by under 3 % from slice to slice.
"""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest

from SoftSpinalCordSegLib.io import reorient
from SoftSpinalCordSegLib.morphometry import PROFILE_BAND_MM, compute_csa
from SoftSpinalCordSegLib.sctcsv import SCT_COLUMNS

from test_cli import read_csv, run

SCT_TOLERANCE = 0.05  # SCT's pytest.approx(rel=0.05)
DIAMETER_TOLERANCE = 0.02
SLICE_TO_SLICE = 0.03
# The README's figures (largest error, largest change between neighbouring slices), re-measured on every case:
README_ELLIPSE = (0.014, 0.016)  # every diameter of an ellipse, and every AP profile
README_RECTANGLE_MOMENTS = (0.027, 0.030)  # the moment-ellipse diameters of a rectangle (rounded corners)
DIAMETERS = {"diameter_AP": "diameter_ap_mm", "diameter_AP_ellipse": "diameter_ap_ellipse_mm",
             "diameter_RL": "diameter_rl_mm"}


def assert_readme_shape_figures(shape, columns, exact):
    """columns: {SCT metric name: per-slice values}."""
    for metric, values in columns.items():
        values = np.asarray(values, dtype=float)
        error, change = README_ELLIPSE
        if shape == "rectangle" and metric != "diameter_AP":
            error, change = README_RECTANGLE_MOMENTS
        assert np.abs(values - exact[metric]).max() <= error * exact[metric], (metric, values, exact[metric])
        if values.size > 1:
            assert np.abs(np.diff(values)).max() <= change * exact[metric], (metric, values)


def cord_axes(angle_rl_deg: float, angle_ap_deg: float) -> np.ndarray:
    """Rows: the cross-section's R-like and A-like axes and the cord's direction (RAS), for SCT's angles."""
    tangent = np.array([-math.tan(math.radians(angle_ap_deg)), math.tan(math.radians(angle_rl_deg)), 1.0])
    tangent /= np.linalg.norm(tangent)
    right = np.array([1.0, 0.0, 0.0]) - tangent[0] * tangent
    right /= np.linalg.norm(right)
    return np.vstack([right, np.cross(tangent, right), tangent])


def sct_phantom(shape, radius_rl, radius_ap, spacing=(1.0, 1.0, 1.0), n_slices=5, angle_rl=0.0, angle_ap=0.0,
                rotation_deg=0.0, axcodes="RAS", supersample=4):
    """(soft mask, affine) of a straight cord of SCT's test shapes ('rectangle' or 'ellipse') through the grid's
    centre, tilted by SCT's angles, its cross-section turned by rotation_deg (from R towards A) about the cord;
    each voxel holds the fraction of its supersample^3 sub-voxel points inside the cord."""
    axes = cord_axes(angle_rl, angle_ap)
    spacing = np.asarray(spacing, dtype=float)
    height = n_slices * spacing[2]
    reach = max(radius_rl, radius_ap) + 1.0 + height / 2 * max(abs(axes[2, 0]), abs(axes[2, 1])) / axes[2, 2]
    size = [2 * int(math.ceil((reach + 2.0) / spacing[axis])) for axis in (0, 1)] + [n_slices]
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = -(np.array(size) - 1) / 2 * spacing
    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    sub = np.stack(np.meshgrid(offsets, offsets, offsets, indexing="ij"), axis=-1).reshape(-1, 3)
    turn = math.radians(rotation_deg)
    in_plane = np.array([[math.cos(turn), math.sin(turn)], [-math.sin(turn), math.cos(turn)]])  # to the shape's axes
    mask = np.zeros(size, dtype=np.float32)
    grid = np.stack(np.meshgrid(*(np.arange(n) for n in size[:2]), indexing="ij"), axis=-1).reshape(-1, 2)
    for k in range(n_slices):
        voxels = np.column_stack([grid, np.full(len(grid), k)])[:, None, :] + sub[None]  # (voxels, sub, 3)
        points = voxels.reshape(-1, 3) * spacing + affine[:3, 3]
        local = (points @ axes[:2].T) @ in_plane.T
        if shape == "rectangle":
            inside = (np.abs(local[:, 0]) <= radius_rl + 0.5) & (np.abs(local[:, 1]) <= radius_ap + 0.5)
        else:
            inside = (local[:, 0] / radius_rl) ** 2 + (local[:, 1] / radius_ap) ** 2 <= 1.0
        mask[:, :, k] = inside.reshape(len(grid), -1).mean(axis=1).reshape(size[:2])
    return reorient(mask, affine, axcodes)


def band_chord(radius_rl, radius_ap):
    offsets = np.linspace(-PROFILE_BAND_MM / 2, PROFILE_BAND_MM / 2, 3001)
    return float(np.mean(2 * radius_ap * np.sqrt(1 - (offsets / radius_rl) ** 2)))


def truth(shape, radius_rl, radius_ap, angle_rl=0.0, angle_ap=0.0, rotation_deg=0.0, thickness=1.0, **_):
    """The exact metrics of a phantom (SCT's names)."""
    tilt_cos = cord_axes(angle_rl, angle_ap)[2, 2]
    values = {"angle_AP": angle_ap, "angle_RL": angle_rl, "orientation": -rotation_deg, "length": thickness / tilt_cos}
    if shape == "rectangle":
        width_rl, width_ap = 2 * radius_rl + 1, 2 * radius_ap + 1
        values.update(area=width_rl * width_ap, diameter_AP=width_ap, diameter_AP_ellipse=2 * width_ap / math.sqrt(3),
                      diameter_RL=2 * width_rl / math.sqrt(3), solidity=1.0)
    else:
        values.update(area=math.pi * radius_rl * radius_ap, diameter_AP=band_chord(radius_rl, radius_ap),
                      diameter_AP_ellipse=2 * radius_ap, diameter_RL=2 * radius_rl, solidity=1.0,
                      eccentricity=math.sqrt(1 - (radius_ap / radius_rl) ** 2))
    return values


# SCT's cases: (its id, phantom parameters, the metrics its test asserts with its expected values).
SCT_CASES = [
    ("area", dict(shape="rectangle", radius_rl=5, radius_ap=3, n_slices=5),
     {"area": 77, "angle_RL": 0.0, "angle_AP": 0.0, "length": 5.0}),
    ("anisotropic pixels", dict(shape="rectangle", radius_rl=5, radius_ap=3, spacing=(0.5, 1, 5), n_slices=5),
     {"area": 77, "angle_RL": 0.0, "angle_AP": 0.0}),
    ("angle IS", dict(shape="rectangle", radius_rl=5, radius_ap=3, spacing=(1, 1, 5), rotation_deg=15, n_slices=5),
     {"area": 77, "angle_RL": 0.0, "angle_AP": 0.0}),
    ("ellipse", dict(shape="ellipse", radius_rl=13, radius_ap=5, n_slices=5),
     {"area": 197.0, "diameter_AP": 10.0, "diameter_RL": 26.0, "angle_RL": 0.0, "angle_AP": 0.0}),
    ("int16 RPI", dict(shape="rectangle", radius_rl=13, radius_ap=5, n_slices=5, axcodes="LAS"),  # SCT's RPI
     {"area": 297.0, "angle_RL": 0.0, "angle_AP": 0.0}),
    ("angle RL -30", dict(shape="ellipse", radius_rl=13, radius_ap=5, angle_rl=-30, n_slices=20),
     {"area": 197.0, "diameter_AP": 10.0, "diameter_RL": 26.0, "angle_RL": -30.0, "angle_AP": 0.0, "length": 23.15}),
    ("angle AP 20", dict(shape="ellipse", radius_rl=13, radius_ap=5, angle_ap=20, n_slices=20),
     {"area": 197.0, "diameter_AP": 10.0, "diameter_RL": 26.0, "angle_RL": 0.0, "angle_AP": 20.0, "length": 21.02}),
    ("angles RL -10 AP 15", dict(shape="ellipse", radius_rl=13, radius_ap=5, angle_rl=-10, angle_ap=15, n_slices=50),
     {"area": 196.0, "diameter_AP": 10.0, "diameter_RL": 26.0, "angle_RL": -10.0, "angle_AP": 15.0}),
    ("angles RL -10 AP 30", dict(shape="ellipse", radius_rl=13, radius_ap=5, angle_rl=-10, angle_ap=30, n_slices=50),
     {"area": 197.0, "diameter_AP": 10.0, "diameter_RL": 26.0, "angle_RL": -10.0, "angle_AP": 30.0}),
    ("uint8 angle RL 15", dict(shape="rectangle", radius_rl=5, radius_ap=3, angle_rl=15, n_slices=50),
     {"area": 77, "angle_RL": 15.0, "angle_AP": 0.0}),
    ("all outputs", dict(shape="ellipse", radius_rl=50, radius_ap=30, n_slices=5),
     {"area": 4701, "angle_AP": 0.0, "angle_RL": 0.0, "diameter_AP": 60.0, "diameter_RL": 100.0,
      "eccentricity": 0.8, "orientation": 0.0}),
]


def write_phantom_file(folder, parameters, name="phantom.nii.gz"):
    mask, affine = sct_phantom(**parameters)
    path = folder / name
    nib.save(nib.Nifti1Image(mask, affine), str(path))
    return path, mask, affine


def sct_value(row, metric):
    return float(row[f"SUM({metric})" if metric == "length" else f"MEAN({metric})"])


@pytest.mark.parametrize("case, parameters, sct_expected", SCT_CASES, ids=[case[0] for case in SCT_CASES])
def test_sct_cases_in_sct_format(case, parameters, sct_expected, tmp_path, capsys):
    path, mask, affine = write_phantom_file(tmp_path, parameters)
    code, _, err = run(["csa", path, "--format", "sct", "-o", tmp_path / "sct.csv"], capsys)
    assert code == 0, err
    rows = read_csv(tmp_path / "sct.csv")
    assert list(rows[0]) == SCT_COLUMNS and len(rows) == parameters["n_slices"]
    assert [int(row["Slice (I->S)"]) for row in rows] == list(range(parameters["n_slices"]))
    assert all(row["VertLevel"] == "" and row["DistancePMJ"] == "" for row in rows)
    exact = truth(thickness=parameters.get("spacing", (1, 1, 1))[2], **parameters)
    for metric, expected in sct_expected.items():
        if metric == "length":  # SCT sums it over the slices
            values = [sum(sct_value(row, metric) for row in rows)]
            expected_exact = exact["length"] * len(rows)
        else:
            values = [sct_value(row, metric) for row in rows]
            expected_exact = exact[metric]
        # SCT's check (its expected value, 5 %): where SCT's number is its own phantom's, the truth instead
        reference = expected if metric not in ("diameter_AP", "angle_RL") else expected_exact
        assert values == pytest.approx([reference] * len(values), rel=SCT_TOLERANCE, abs=1e-6), (metric, values)
        assert values == pytest.approx([expected_exact] * len(values), rel=SCT_TOLERANCE, abs=1e-6), (metric, values)
    assert_readme_shape_figures(parameters["shape"], {m: [sct_value(row, m) for row in rows] for m in DIAMETERS}, exact)


SHAPE_CASES = [  # SCT's shapes over the range: 0.5-1 mm pixels, anisotropic voxels, tilts of 0-30 degrees
    dict(shape="ellipse", radius_rl=6.0, radius_ap=4.0, spacing=(0.5, 0.5, 1.0), n_slices=12),
    dict(shape="ellipse", radius_rl=6.0, radius_ap=4.0, spacing=(1.0, 1.0, 1.0), angle_rl=30, n_slices=20),
    dict(shape="ellipse", radius_rl=6.0, radius_ap=4.0, spacing=(1.0, 1.0, 1.0), angle_ap=30, n_slices=20),
    dict(shape="ellipse", radius_rl=6.0, radius_ap=4.0, spacing=(0.8, 0.8, 0.8), angle_rl=20, angle_ap=-20, n_slices=25),
    dict(shape="ellipse", radius_rl=6.0, radius_ap=4.0, spacing=(0.5, 1.0, 2.0), angle_rl=15, n_slices=12),
    dict(shape="ellipse", radius_rl=13, radius_ap=5, spacing=(0.5, 0.5, 1.0), angle_ap=25, rotation_deg=10, n_slices=12),
    dict(shape="rectangle", radius_rl=5, radius_ap=3, spacing=(0.6, 0.6, 1.0), angle_rl=-25, n_slices=16),
    dict(shape="rectangle", radius_rl=5, radius_ap=3, spacing=(1.0, 0.5, 1.0), angle_ap=10, n_slices=16),
]


@pytest.mark.parametrize("parameters", SHAPE_CASES, ids=lambda p: "{shape} {spacing} RL{angle_rl} AP{angle_ap}".format(
    **{"angle_rl": 0, "angle_ap": 0, **p}))
def test_sub_voxel_shape_within_two_percent_and_smooth_along_the_cord(parameters):
    mask, affine = sct_phantom(**parameters)
    table = compute_csa(mask, affine)
    exact = truth(thickness=parameters["spacing"][2], **parameters)
    for metric, name in DIAMETERS.items():  # the bounds, then the README's tighter figures
        values = table.column(name)
        assert np.abs(values - exact[metric]).max() <= DIAMETER_TOLERANCE * exact[metric], (metric, values, exact[metric])
        assert np.abs(np.diff(values)).max() < SLICE_TO_SLICE * exact[metric], (metric, values)
    assert_readme_shape_figures(parameters["shape"], {m: table.column(c) for m, c in DIAMETERS.items()}, exact)
    np.testing.assert_allclose(table.column("csa_mm2"), exact["area"], rtol=0.01)
    np.testing.assert_allclose(table.column("angle_ap_deg"), exact["angle_AP"], atol=0.5)
    np.testing.assert_allclose(table.column("angle_rl_deg"), exact["angle_RL"], atol=0.5)
    np.testing.assert_allclose(table.column("orientation_deg"), exact["orientation"], atol=1.0)
    np.testing.assert_allclose(table.column("length_mm"), exact["length"], rtol=0.01)
    assert np.all(table.column("solidity") > 0.98)
    if "eccentricity" in exact:
        np.testing.assert_allclose(table.column("eccentricity"), exact["eccentricity"], atol=0.02)


def test_sct_slice_numbering_and_summaries_in_sct_format(tmp_path, capsys, monkeypatch):
    """Slice (I->S) counts from the inferior end whichever way the file stores the slices; a summary row
    gives the range, the population SD and the summed length."""
    parameters = dict(shape="ellipse", radius_rl=6.0, radius_ap=4.0, angle_rl=20, n_slices=10)
    monkeypatch.chdir(tmp_path)
    forward, _, _ = write_phantom_file(tmp_path, parameters, "ras.nii.gz")
    flipped, _, _ = write_phantom_file(tmp_path, {**parameters, "axcodes": "RPI"}, "rpi.nii.gz")  # k from S to I
    tables = []
    for path in (forward, flipped):
        code, _, err = run(["csa", path, "--format", "sct", "-o", tmp_path / "slices.csv"], capsys)
        assert code == 0, err
        tables.append(read_csv(tmp_path / "slices.csv"))
    for a, b in zip(*tables):
        assert a["Slice (I->S)"] == b["Slice (I->S)"]
        assert float(a["MEAN(area)"]) == pytest.approx(float(b["MEAN(area)"]), abs=1e-4)
    assert {row["Filename"] for row in tables[1]} == {str(flipped)}
    code, _, err = run(["csa", flipped.name, "--format", "sct", "--slices", "2:7", "-o", tmp_path / "range.csv"], capsys)
    assert code == 0, err
    (summary,) = read_csv(tmp_path / "range.csv")
    assert summary["Filename"] == str(flipped)  # given relative: absolute, as SCT writes it
    # --slices takes the file's indices: 2..7 of the flipped file are 2..7 counted from the inferior end too
    assert summary["Slice (I->S)"] == "2:7"
    areas = [float(row["MEAN(area)"]) for row in tables[1] if 2 <= int(row["Slice (I->S)"]) <= 7]
    assert float(summary["MEAN(area)"]) == pytest.approx(np.mean(areas), abs=1e-5)
    assert float(summary["STD(area)"]) == pytest.approx(np.std(areas), abs=1e-5)  # ddof=0, as SCT
    assert float(summary["SUM(length)"]) == pytest.approx(6 / math.cos(math.radians(20)), rel=0.01)


def test_pam50_in_sct_format_read_back_by_column_name(shared_file, tmp_path, capsys):
    """The PAM50 cord per level in SCT's layout: discs and the level map give the same rows, read by name."""
    cord = shared_file("labels/PAM50/PAM50_cord.nii.gz")
    levels = shared_file("labels/PAM50/PAM50_levels.nii.gz")
    discs = shared_file("labels/PAM50/PAM50_label_disc.nii.gz")
    outputs = {}
    for name, option in (("levels", ["--levels", levels]), ("discs", ["--discs", discs])):
        code, _, err = run(["csa", cord, *option, "--perlevel", "--format", "sct", "-o", tmp_path / f"{name}.csv"], capsys)
        assert code == 0, err
        outputs[name] = read_csv(tmp_path / f"{name}.csv")
    by_level = {row["VertLevel"]: row for row in outputs["levels"]}
    c2, c3 = by_level["2"], by_level["3"]
    assert 60.0 <= float(c2["MEAN(area)"]) <= 85.0 and 60.0 <= float(c3["MEAN(area)"]) <= 85.0
    assert 6.0 <= float(c3["MEAN(diameter_AP)"]) <= 9.0 and 10.0 <= float(c3["MEAN(diameter_RL)"]) <= 14.0
    assert float(c2["SUM(length)"]) == pytest.approx(15.5, abs=0.5)  # 31 slices of 0.5 mm
    ignore = {"Timestamp", "Filename"}
    for a, b in zip(outputs["levels"], outputs["discs"]):
        assert {k: v for k, v in a.items() if k not in ignore} == {k: v for k, v in b.items() if k not in ignore}
