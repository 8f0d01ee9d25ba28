"""The CSA drift table (docs/model/csa_drift.csv, tools/csa_drift.py): the shipped weights have a row, and that
row is what they measure on the shared validation images."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def drift(tool):
    return tool("csa_drift")


def test_shipped_weights_have_a_drift_row(drift):
    """New weights need a new row (python tools/csa_drift.py --add NAME) before they ship."""
    shipped = drift.shipped_sha256()
    assert shipped in [row["weights_sha256"] for row in drift.read_rows()], (
        "the shipped weights have no row in docs/model/csa_drift.csv: run python tools/csa_drift.py --add RELEASE")


def test_drift_rows_hold_every_validation_image(drift):
    names = [item.name for item in drift.IMAGES]
    for row in drift.read_rows():
        assert all(float(row[name]) > 10 for name in names), row["release"]


def test_shipped_row_is_what_the_shipped_model_measures(drift, data_dir):
    row = drift.latest_row(drift.read_rows(), drift.shipped_sha256())  # the latest reading of these weights
    assert row is not None, "the shipped weights have no row in the drift table"
    measured = drift.measure_release(data_dir)
    assert measured, "no validation image found in the shared data"
    for name, csa in measured.items():
        assert csa == pytest.approx(float(row[name]), abs=drift.SAME_CSA_MM2), name


def test_print_drift_gives_the_change_per_image_and_contrast(drift, tmp_path, capsys):
    path = tmp_path / "drift.csv"
    first = {item.name: 70.0 for item in drift.IMAGES}
    second = {**first, "unf01 T2w": 77.0, "amu_test001 T2w": 63.0}
    drift.append_row("r1", first, "2026-01-01", path)
    drift.append_row("r2", second, "2026-02-01", path)
    rows = drift.read_rows(path)
    assert [r["release"] for r in rows] == ["r1", "r2"]
    drift.print_drift(rows)
    out = capsys.readouterr().out
    assert "| unf01 T2w | 70.0 | 77.0 | +10.0% |" in out
    assert "| amu_test001 T2w | 70.0 | 63.0 | -10.0% |" in out
    assert "T1w: +0.0%" in out and "T2w: +0.0%" in out  # unf01 T2w +10 % and amu -10 % average out
    assert np.isclose(float(rows[1]["unf01 T2w"]), 77.0)


def test_a_new_row_needs_new_weights_or_a_new_reading(drift, tmp_path):
    """--add refuses a row that repeats the latest one of the same weights; a new reading of them is a new row."""
    path = tmp_path / "drift.csv"
    first = {item.name: 70.0 for item in drift.IMAGES}
    drift.append_row("r1", first, "2026-01-01", path)
    sha = drift.read_rows(path)[0]["weights_sha256"]
    assert drift.matching_release({name: 70.2 for name in first}, drift.read_rows(path), sha) == "r1"
    read_otherwise = {**first, "unf01 T2w": 66.0}
    assert drift.matching_release(read_otherwise, drift.read_rows(path), sha) == ""
    assert drift.matching_release(first, drift.read_rows(path), "0" * 64) == ""  # other weights
    assert drift.matching_release({}, drift.read_rows(path), sha) == ""  # nothing measured matches nothing
    drift.append_row("r2", read_otherwise, "2026-02-01", path)
    assert drift.matching_release(read_otherwise, drift.read_rows(path), sha) == "r2"
    assert drift.matching_release(first, drift.read_rows(path), sha) == ""  # the latest row counts
