"""Slicer's automatic vertebral levels on a real MRML scene (slicer-core): disc points the user can move, and the
per-level table re-measured from them without running the network again."""

from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core (real MRML) is not installed")
vtk = pytest.importorskip("vtk")

from SoftSpinalCordSegLib import mrml  # noqa: E402
from SoftSpinalCordSegLib.errors import InputError  # noqa: E402
from SoftSpinalCordSegLib.io import Volume, save_like  # noqa: E402


@pytest.fixture
def app(tmp_path):
    with mrml.HeadlessSlicer(str(tmp_path / "cache")) as headless:
        yield headless


def load_pam50_crop(app, shared_file, tmp_path, start=150, stop=None):
    """PAM50_small T2 cropped along S as an input volume, and its cord mask in Slicer's (i, j, k) grid."""
    from test_vertebrae import _pam50_cervical

    image, cord, _, affine = _pam50_cervical(shared_file, start)
    image, cord = image[..., :stop], cord[..., :stop]
    save_like(image, Volume(array=image, affine=affine), tmp_path / "t2.nii.gz")
    save_like(cord, Volume(array=cord, affine=affine), tmp_path / "cord.nii.gz")
    volume = app.load_volume(str(tmp_path / "t2.nii.gz"), "t2")
    cord_node = app.load_volume(str(tmp_path / "cord.nii.gz"), "cord")
    probability = slicer.util.arrayFromVolume(cord_node).transpose(2, 1, 0).astype(np.float32).copy()
    return volume, probability


def level_counts(table_node) -> dict:
    return {table_node.GetCellText(row, 0): int(table_node.GetCellText(row, 2)) for row in range(table_node.GetNumberOfRows())}


def point_index(markups, label) -> int:
    labels = [markups.GetNthControlPointLabel(index) for index in range(markups.GetNumberOfControlPoints())]
    return labels.index(label)


def test_moved_automatic_disc_points_remeasure_the_levels_without_the_network(app, shared_file, tmp_path):
    volume, probability = load_pam50_crop(app, shared_file, tmp_path)
    outputs = mrml.segment_volume_node(volume, probability=probability, levels="auto")
    discs = outputs.disc_points
    labels = [discs.GetNthControlPointLabel(index) for index in range(discs.GetNumberOfControlPoints())]
    assert {"C2/C3", "C3/C4", "C7/T1"} <= set(labels) and not outputs.level_note
    before = level_counts(outputs.level_table)
    assert {"2", "3", "4", "5", "6", "7", "8"} <= set(before)

    moved = point_index(discs, "C3/C4")
    position = [0.0, 0.0, 0.0]
    discs.GetNthControlPointPositionWorld(moved, position)
    discs.SetNthControlPointPositionWorld(moved, position[0], position[1], position[2] - 10.0)  # 10 mm down
    remeasured = mrml.remeasure_levels(volume, discs)  # its segmenter fails if called: no network
    after = level_counts(remeasured.level_table)
    assert remeasured.level_table is outputs.level_table  # updated in place
    assert after["3"] - before["3"] == before["4"] - after["4"] and 4 <= after["3"] - before["3"] <= 6  # 2 mm slices
    assert {key: value for key, value in after.items() if key not in "34"} == \
        {key: value for key, value in before.items() if key not in "34"}
    assert remeasured.disc_points is None and mrml.find_output(volume, "discs") is discs  # the user's points stay

    again = mrml.segment_volume_node(volume, probability=probability, levels="auto")  # a new automatic run
    assert again.disc_points is not discs and level_counts(again.level_table) == before


def test_automatic_levels_refused_leave_a_note_and_no_disc_points(app, shared_file, tmp_path):
    volume, probability = load_pam50_crop(app, shared_file, tmp_path, start=120, stop=95)  # C3 to T2: no C2
    outputs = mrml.segment_volume_node(volume, probability=probability, levels="auto")
    assert outputs.disc_points is None and outputs.level_table is None
    assert outputs.level_note.startswith("no vertebral levels") and "C2" in outputs.level_note
    assert outputs.csa_table is not None  # the segmentation and its CSA are still made
    with pytest.raises(InputError, match="must be a label volume"):
        mrml.segment_volume_node(volume, probability=probability, levels="automatic")


def test_remeasure_needs_an_earlier_run(app, shared_file, tmp_path):
    volume, _ = load_pam50_crop(app, shared_file, tmp_path)
    discs = app.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "discs")
    with pytest.raises(InputError, match="run the segmentation first"):
        mrml.remeasure_levels(volume, discs)


def test_a_rerun_without_levels_retires_the_automatic_disc_points(app, shared_file, tmp_path):
    """Disc points of an earlier automatic run do not belong to a run without them (no levels, or other levels):
    left as the module wrote them they are removed, with the per-level table; moved by the user they are kept
    but no longer the input's (so Re-measure levels, which uses them, is off)."""
    volume, probability = load_pam50_crop(app, shared_file, tmp_path)
    automatic = mrml.segment_volume_node(volume, probability=probability, levels="auto")
    discs_id, table_id = automatic.disc_points.GetID(), automatic.level_table.GetID()
    plain = mrml.segment_volume_node(volume, probability=probability)
    assert plain.level_table is None and plain.disc_points is None
    assert mrml.find_output(volume, "discs") is None and mrml.find_output(volume, "csa_levels") is None
    assert app.scene.GetNodeByID(discs_id) is None and app.scene.GetNodeByID(table_id) is None

    moved = mrml.segment_volume_node(volume, probability=probability, levels="auto").disc_points
    index = point_index(moved, "C3/C4")
    position = [0.0, 0.0, 0.0]
    moved.GetNthControlPointPositionWorld(index, position)
    moved.SetNthControlPointPositionWorld(index, position[0], position[1], position[2] - 5.0)
    remeasured = mrml.remeasure_levels(volume, moved)
    assert mrml.find_output(volume, "discs") is moved and remeasured.level_table is not None  # still the input's
    mrml.segment_volume_node(volume, probability=probability)
    assert mrml.find_output(volume, "discs") is None and mrml.find_output(volume, "csa_levels") is None
    assert app.scene.GetNodeByID(moved.GetID()) is moved and moved.GetNumberOfControlPoints() > 2  # the user's points stay
    assert moved.GetAttribute(mrml.ROLE_ATTRIBUTE) is None


def test_automatic_disc_points_reloaded_from_mrb_are_replaced_not_duplicated(app, shared_file, tmp_path):
    """The markups file rounds the points' last bits: after saving and reloading the scene, a new automatic run
    must still see its own, unmoved points and update them, not keep them as the user's and add a second list."""
    volume, probability = load_pam50_crop(app, shared_file, tmp_path)
    mrml.segment_volume_node(volume, probability=probability, levels="auto")
    bundle = tmp_path / "scene.mrb"
    assert app.scene.WriteToMRB(str(bundle))
    with mrml.HeadlessSlicer(str(tmp_path / "cache2")) as loaded:
        assert loaded.scene.ReadFromMRB(str(bundle))
        volume2 = loaded.scene.GetFirstNode("t2", "vtkMRMLScalarVolumeNode")
        discs2 = mrml.find_output(volume2, "discs")
        assert discs2 is not None
        rerun = mrml.segment_volume_node(volume2, probability=probability, levels="auto")
        assert rerun.disc_points is discs2
        assert loaded.scene.GetNumberOfNodesByClass("vtkMRMLMarkupsFiducialNode") == 1
        assert rerun.level_table is mrml.find_output(volume2, "csa_levels")
        assert loaded.scene.GetNumberOfNodesByClass("vtkMRMLTableNode") == 2  # CSA and per-level, updated in place
