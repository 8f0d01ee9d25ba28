"""segment_volume_node on a real MRML scene (slicer-core): geometry, display, segment, table, chart, re-runs, .mrb."""

from __future__ import annotations

import csv

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core (real MRML) is not installed")
vtk = pytest.importorskip("vtk")

from SoftSpinalCordSegLib import mrml  # noqa: E402
from SoftSpinalCordSegLib.errors import InputError, ModelNotInstalledError  # noqa: E402
from SoftSpinalCordSegLib.morphometry import compute_csa  # noqa: E402
from SoftSpinalCordSegLib.phantom import CordPhantom  # noqa: E402

PHANTOM = CordPhantom(area_mm2=80.0, aspect=1.4, tilt_ap_deg=10.0, length_mm=24.0)


@pytest.fixture
def app(tmp_path):
    with mrml.HeadlessSlicer(str(tmp_path / "cache")) as headless:
        headless.add_slice_view("Red", "Axial", size=(128, 128))
        yield headless


def ijk_to_ras(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def ijk_array(node) -> np.ndarray:
    return slicer.util.arrayFromVolume(node).transpose(2, 1, 0)


def segment_labelmap(segmentation_node, reference_node) -> np.ndarray:
    """The cord segment exported on the reference grid, in (i, j, k) order."""
    scene = segmentation_node.GetScene()
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "export")
    ids = vtk.vtkStringArray()
    ids.InsertNextValue(mrml.SEGMENT_ID)
    assert slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(segmentation_node, ids, labelmap, reference_node)
    array = ijk_array(labelmap).copy()
    scene.RemoveNode(labelmap)
    return array


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def phantom_input(app, write_phantom, axcodes="LAS", spacing=(0.8, 0.8, 2.0)):
    """A phantom file loaded in the scene (the image), and its soft mask on Slicer's grid (the 'probability')."""
    path, _, _ = write_phantom(PHANTOM, spacing=spacing, axcodes=axcodes)
    volume = app.load_volume(str(path), "phantom")
    return path, volume, ijk_array(volume).astype(np.float32).copy()


def test_outputs_geometry_display_segment_table_chart(app, write_phantom):
    _, volume, probability = phantom_input(app, write_phantom)
    before = ijk_array(volume).copy()
    outputs = mrml.segment_volume_node(volume, probability=probability, threshold=0.5, opacity=0.7, floor=0.05)

    prob_node = outputs.probability_volume
    assert prob_node.GetScene() is app.scene
    np.testing.assert_array_equal(ijk_to_ras(prob_node), ijk_to_ras(volume))
    values = ijk_array(prob_node)
    np.testing.assert_allclose(values, probability, atol=1e-7)
    assert values.min() >= 0.0 and values.max() <= 1.0 and values.max() > 0.99

    display = prob_node.GetDisplayNode()
    assert display.GetColorNode().GetName() == mrml.COLOR_TABLE_NAME
    assert display.GetColorNode().GetNumberOfColors() == 256
    assert not display.GetAutoWindowLevel()
    assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == (0.0, 1.0)
    assert display.GetApplyThreshold() and display.GetLowerThreshold() == pytest.approx(0.05)
    composite = app.scene.GetNodeByID("vtkMRMLSliceCompositeNodeRed")
    assert composite.GetForegroundVolumeID() == prob_node.GetID()
    assert composite.GetBackgroundVolumeID() == volume.GetID()
    assert composite.GetForegroundOpacity() == pytest.approx(0.7)

    segmentation = outputs.segmentation
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 1
    segment = segmentation.GetSegmentation().GetSegment(mrml.SEGMENT_ID)
    assert segment.GetName() == "spinal cord"
    tag = vtk.reference("")
    assert segment.GetTag(segment.GetTerminologyEntryTagName(), tag)  # the tag API of every Slicer release
    assert "SCT^2748008^Spinal cord" in str(tag) and str(tag) == segment.GetTerminology()
    assert segmentation.GetNodeReference(slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()) is volume
    assert segmentation.GetSegmentation().ContainsRepresentation("Closed surface")
    assert segmentation.GetDisplayNode().GetPreferredDisplayRepresentationName3D() == "Closed surface"
    np.testing.assert_array_equal(segment_labelmap(segmentation, volume), (probability >= 0.5).astype(np.uint8))

    expected = compute_csa(probability, ijk_to_ras(volume))
    table = outputs.csa_table
    assert table.GetNumberOfRows() == len(expected.rows)
    assert [table.GetColumnName(i) for i in range(table.GetNumberOfColumns())] == expected.columns
    for name in ("slice", "z_mm", "csa_mm2", "angle_ap_deg"):
        column = slicer.util.arrayFromTableColumn(table, name)
        np.testing.assert_allclose(column, expected.column(name), rtol=0, atol=1e-9)
    interior = np.abs(expected.column("z_mm")) < PHANTOM.length_mm / 2 - 4
    np.testing.assert_allclose(expected.column("csa_mm2")[interior], PHANTOM.area_mm2, rtol=0.03)

    series = outputs.csa_chart.GetNthPlotSeriesNode(0)
    assert outputs.csa_chart.GetNumberOfPlotSeriesNodes() == 1
    assert series.GetTableNode() is table
    assert (series.GetXColumnName(), series.GetYColumnName()) == ("z_mm", "csa_mm2")
    np.testing.assert_array_equal(ijk_array(volume), before)  # the input is untouched


def test_overlay_opacity_follows_the_option_after_the_run(app, write_phantom):
    _, volume, probability = phantom_input(app, write_phantom)
    mrml.set_overlay_opacity(volume, 0.3)  # no result yet: nothing to do
    outputs = mrml.segment_volume_node(volume, probability=probability, opacity=0.6)
    mrml.set_overlay_opacity(volume, 0.25)
    assert outputs.probability_volume.GetDisplayNode().GetOpacity() == pytest.approx(0.25)
    assert app.scene.GetNodeByID("vtkMRMLSliceCompositeNodeRed").GetForegroundOpacity() == pytest.approx(0.25)


def test_overlay_is_composited_in_slice_view(app, write_phantom):
    """Slice-logic compositing (no OpenGL): inferno colours over the cord, plain grey elsewhere."""
    _, volume, probability = phantom_input(app, write_phantom, axcodes="RAS")
    mrml.segment_volume_node(volume, probability=probability, opacity=1.0)
    logic = app.slice_logics["Red"]
    logic.FitSliceToAll()
    logic.GetSliceNode().JumpSliceByCentering(0.0, 0.0, 0.0)
    rgba = app.render_slice("Red").astype(int)
    red, green, blue = rgba[..., 0], rgba[..., 1], rgba[..., 2]
    grey = (np.abs(red - green) <= 2) & (np.abs(green - blue) <= 2)  # the background image alone
    assert 20 < (~grey).sum() < rgba.shape[0] * rgba.shape[1] / 4  # the overlay covers the cord, not the view
    centre = rgba[rgba.shape[0] // 2, rgba.shape[1] // 2]  # cord centre (RAS 0, 0, 0): probability 1
    assert centre[0] > 200 and centre[1] > 200 and centre[2] > 100  # inferno's pale-yellow top end


def test_rerun_updates_in_place_and_bad_input_leaves_scene_unchanged(app, write_phantom):
    _, volume, probability = phantom_input(app, write_phantom)
    first = mrml.segment_volume_node(volume, probability=probability)
    count = app.scene.GetNumberOfNodes()
    second = mrml.segment_volume_node(volume, probability=probability * 0.8, threshold=0.3)
    assert app.scene.GetNumberOfNodes() == count
    for role in ("probability_volume", "segmentation", "csa_table", "csa_chart"):
        assert getattr(first, role) is getattr(second, role)
    np.testing.assert_allclose(ijk_array(second.probability_volume), probability * 0.8, atol=1e-6)
    np.testing.assert_array_equal(segment_labelmap(second.segmentation, volume), (probability * 0.8 >= 0.3).astype(np.uint8))

    count = app.scene.GetNumberOfNodes()
    with pytest.raises(InputError, match="shape"):
        mrml.segment_volume_node(volume, probability=probability[:-1])
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        mrml.segment_volume_node(volume, probability=probability * 2)
    with pytest.raises(InputError, match="threshold"):
        mrml.segment_volume_node(volume, probability=probability, threshold=1.0)
    label = app.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    with pytest.raises(InputError, match="not a scalar"):
        mrml.segment_volume_node(label, probability=probability)
    with pytest.raises(InputError, match="no input"):
        mrml.segment_volume_node(None)
    assert app.scene.GetNumberOfNodes() == count + 1  # only the label node this test added


def test_a_run_that_fails_midway_leaves_no_partial_outputs(app, write_phantom, monkeypatch):
    """Outputs are added one after the other: a failure after the first (as SetTerminology raised on Slicer 5.8
    after the probability volume was added) must remove those already added."""
    _, volume, probability = phantom_input(app, write_phantom)
    count = app.scene.GetNumberOfNodes()

    def failing_chart(volume_node, table_node):
        raise RuntimeError("chart failed")

    monkeypatch.setattr(mrml, "_update_chart", failing_chart)
    with pytest.raises(RuntimeError, match="chart failed"):
        mrml.segment_volume_node(volume, probability=probability)
    assert app.scene.GetNumberOfNodes() == count
    assert mrml.find_output(volume, "probability") is None and mrml.find_output(volume, "segmentation") is None
    monkeypatch.undo()
    outputs = mrml.segment_volume_node(volume, probability=probability)  # and a later run works
    assert outputs.csa_chart is not None and app.scene.GetNumberOfNodes() > count


def test_default_segmenter_gets_the_input_grid_and_reports_progress(app, write_phantom):
    _, volume, probability = phantom_input(app, write_phantom)
    calls, messages = [], []

    def segmenter(image, affine, *, device, largest_component, both_polarities, progress):
        calls.append((image.shape, affine.copy(), device, largest_component, both_polarities))
        progress(0.5, "halfway")
        return probability

    mrml.segment_volume_node(volume, segmenter=segmenter, device="cpu", progress=lambda f, m: messages.append((f, m)))
    assert calls[0][0] == probability.shape and calls[0][2:] == ("cpu", True, True)
    mrml.segment_volume_node(volume, segmenter=segmenter, device="cpu", both_polarities=False, progress=lambda f, m: None)
    assert calls[1][4] is False
    np.testing.assert_array_equal(calls[0][1], ijk_to_ras(volume))
    assert messages[0] == (0.5, "halfway") and messages[-1][0] == 1.0


def test_levels_from_label_volume_and_disc_points(app, write_phantom):
    _, volume, probability = phantom_input(app, write_phantom, axcodes="RAS")
    affine = ijk_to_ras(volume)
    superior = (affine[2, :3] @ np.indices(probability.shape).reshape(3, -1) + affine[2, 3]).reshape(probability.shape)
    levels = np.where(superior > 0, 2, 3).astype(np.int16)  # C2 above S=0, C3 below
    level_node = app.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "levels")
    level_node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(affine))
    slicer.util.updateVolumeFromArray(level_node, np.ascontiguousarray(levels.transpose(2, 1, 0)))

    outputs = mrml.segment_volume_node(volume, probability=probability, levels=level_node)
    rows = [dict(zip(["level", "n_slices"], [outputs.level_table.GetCellText(r, 0), outputs.level_table.GetCellText(r, 2)]))
            for r in range(outputs.level_table.GetNumberOfRows())]
    assert [row["level"] for row in rows] == ["2", "3"]
    expected = compute_csa(probability, affine, levels=levels).summarize(per_level=True)
    assert [int(row["n_slices"]) for row in rows] == [row["n_slices"] for row in expected.rows]

    discs = app.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "discs")
    discs.AddControlPoint(vtk.vtkVector3d(0, 0, 30), "C1/C2")
    discs.AddControlPoint(vtk.vtkVector3d(0, 0, 0), "C2-C3")
    discs.AddControlPoint(vtk.vtkVector3d(0, 0, -30), "C3/C4")
    from_discs = mrml.segment_volume_node(volume, probability=probability, levels=discs)
    assert from_discs.level_table is outputs.level_table  # updated in place
    assert [from_discs.level_table.GetCellText(r, 0) for r in range(from_discs.level_table.GetNumberOfRows())] == ["2", "3"]

    discs.RemoveAllControlPoints()
    discs.AddControlPoint(vtk.vtkVector3d(0, 0, 0), "C2/C3")
    with pytest.raises(InputError, match="two disc points"):
        mrml.segment_volume_node(volume, probability=probability, levels=discs)


def test_disc_points_unplaced_twice_and_levels_that_miss_the_cord(app, write_phantom):
    _, volume, probability = phantom_input(app, write_phantom, axcodes="RAS")
    discs = app.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "discs")
    discs.AddControlPoint(vtk.vtkVector3d(0, 0, 30), "C1/C2")
    discs.AddControlPoint(vtk.vtkVector3d(0, 0, 0), "C2/C3")
    discs.AddControlPoint(vtk.vtkVector3d(0, 0, -30), "C3/C4")
    unplaced = discs.AddControlPoint(vtk.vtkVector3d(0, 0, 5), "C2/C3")  # cleared: no position any more
    discs.UnsetNthControlPointPosition(unplaced)
    outputs = mrml.segment_volume_node(volume, probability=probability, levels=discs)
    counts = [int(outputs.level_table.GetCellText(r, 2)) for r in range(outputs.level_table.GetNumberOfRows())]
    superior = compute_csa(probability, ijk_to_ras(volume)).column("z_mm")
    # Split at S=0, not the unplaced S=5; the slice holding the disc belongs to the vertebra above (as in PAM50_levels)
    above = superior > -0.5 * np.median(np.diff(superior))
    assert counts == [int(above.sum()), int((~above).sum())]

    discs.SetNthControlPointPosition(unplaced, 0, 0, 5)  # the same disc placed twice
    with pytest.raises(InputError, match="placed twice"):
        mrml.segment_volume_node(volume, probability=probability, levels=discs)

    empty_labels = app.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "no voxels")
    with pytest.raises(InputError, match="no image data"):
        mrml.level_inputs(empty_labels, volume)

    far = app.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "far discs")
    far.AddControlPoint(vtk.vtkVector3d(0, 0, 130), "C1/C2")
    far.AddControlPoint(vtk.vtkVector3d(0, 0, 100), "C2/C3")
    missed = mrml.segment_volume_node(volume, probability=probability, levels=far)
    assert missed.level_table is None and "do not reach the cord" in missed.level_note
    assert missed.segmentation is outputs.segmentation  # the segmentation and CSA are still made


def test_a_linear_parent_transform_places_csa_and_levels_in_world_space(app, write_phantom):
    _, volume, probability = phantom_input(app, write_phantom, axcodes="RAS")
    untransformed = mrml.segment_volume_node(volume, probability=probability).csa
    transform = app.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    to_world = np.eye(4)
    to_world[:3, 3] = (5.0, -3.0, 40.0)  # the cord lies 40 mm higher in world space
    transform.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(to_world))
    volume.SetAndObserveTransformNodeID(transform.GetID())

    discs = app.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "discs")  # placed on the image as shown
    for z, name in ((70, "C1/C2"), (40, "C2/C3"), (10, "C3/C4")):
        discs.AddControlPoint(vtk.vtkVector3d(0, 0, z), name)
    outputs = mrml.segment_volume_node(volume, probability=probability, levels=discs)
    np.testing.assert_allclose(outputs.csa.column("z_mm"), untransformed.column("z_mm") + 40.0, atol=1e-6)
    np.testing.assert_allclose(outputs.csa.column("csa_mm2"), untransformed.column("csa_mm2"), rtol=1e-6)
    counts = [int(outputs.level_table.GetCellText(r, 2)) for r in range(outputs.level_table.GetNumberOfRows())]
    superior = untransformed.column("z_mm")
    above = superior > -0.5 * np.median(np.diff(superior))  # split at world S=40, its slice above
    assert counts == [int(above.sum()), int((~above).sum())]
    assert outputs.probability_volume.GetTransformNodeID() == transform.GetID()  # outputs sit under it too


def test_a_rerun_leaves_outputs_the_user_edited_or_copied_and_shows_the_new_input(app, write_phantom):
    _, volume, probability = phantom_input(app, write_phantom)
    first = mrml.segment_volume_node(volume, probability=probability)
    first.csa_table.AddColumn().SetName("my notes")  # the user's own column
    corrected = ijk_array(first.probability_volume).copy()
    corrected[:, :, corrected.shape[2] // 2] = 0  # erased on one slice
    slicer.util.updateVolumeFromArray(first.probability_volume, np.ascontiguousarray(corrected.transpose(2, 1, 0)))
    first.segmentation.SetName("my corrected cord")
    second = mrml.segment_volume_node(volume, probability=probability)
    for role in ("probability_volume", "segmentation", "csa_table"):
        assert getattr(second, role) is not getattr(first, role)
        assert mrml.find_output(volume, role.replace("_volume", "").replace("_table", "")) is not getattr(first, role)
    assert first.csa_table.GetTable().GetColumnByName("my notes") is not None
    np.testing.assert_array_equal(ijk_array(first.probability_volume), corrected)
    assert first.segmentation.GetName() == "my corrected cord"
    third = mrml.segment_volume_node(volume, probability=probability)  # untouched outputs are updated in place
    for role in ("probability_volume", "segmentation", "csa_table", "csa_chart"):
        assert getattr(third, role) is getattr(second, role)

    _, other, other_probability = phantom_input(app, write_phantom, axcodes="RAS", spacing=(0.5, 0.5, 1.0))
    mrml.segment_volume_node(other, probability=other_probability)
    composite = app.scene.GetNodeByID("vtkMRMLSliceCompositeNodeRed")
    assert composite.GetBackgroundVolumeID() == other.GetID()  # its overlay is shown over it, not over the first


def test_outputs_go_to_the_input_study_and_survive_mrb(app, write_phantom, tmp_path):
    _, volume, probability = phantom_input(app, write_phantom)
    hierarchy = app.scene.GetSubjectHierarchyNode()
    patient = hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "patient")
    study = hierarchy.CreateStudyItem(patient, "study")
    hierarchy.CreateItem(study, volume)
    outputs = mrml.segment_volume_node(volume, probability=probability)
    for node in (outputs.probability_volume, outputs.segmentation, outputs.csa_table, outputs.csa_chart):
        assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node)) == study

    bundle = tmp_path / "scene.mrb"
    assert app.scene.WriteToMRB(str(bundle))
    loaded = mrml.HeadlessSlicer(str(tmp_path / "cache2"))
    assert loaded.scene.ReadFromMRB(str(bundle))
    volume2 = loaded.scene.GetFirstNode("phantom", "vtkMRMLScalarVolumeNode")
    assert volume2 is not None
    prob2 = mrml.find_output(volume2, "probability")
    np.testing.assert_allclose(ijk_to_ras(prob2), ijk_to_ras(outputs.probability_volume), atol=1e-9)
    np.testing.assert_allclose(ijk_array(prob2), probability, atol=1e-7)
    assert prob2.GetDisplayNode().GetColorNode().GetName() == mrml.COLOR_TABLE_NAME
    segmentation2 = mrml.find_output(volume2, "segmentation")
    np.testing.assert_array_equal(segment_labelmap(segmentation2, volume2), (probability >= 0.5).astype(np.uint8))
    table2 = mrml.find_output(volume2, "csa")
    # Slicer's table storage writes 6 significant digits (the CLI's CSV keeps 6 decimals).
    np.testing.assert_allclose(slicer.util.arrayFromTableColumn(table2, "csa_mm2"), outputs.csa.column("csa_mm2"), rtol=1e-5)
    outputs.csa.write_csv(tmp_path / "run.csv")
    mrml.csa_table_of(outputs.csa_table).write_csv(tmp_path / "from_node.csv")  # what Export CSV writes
    assert (tmp_path / "from_node.csv").read_text() == (tmp_path / "run.csv").read_text()
    mrml.csa_table_of(table2).write_csv(tmp_path / "reloaded.csv")  # exportable after the scene is reloaded too
    reloaded, run = read_csv(tmp_path / "reloaded.csv"), read_csv(tmp_path / "run.csv")
    assert [row["slice"] for row in reloaded] == [row["slice"] for row in run]
    np.testing.assert_allclose([float(row["csa_mm2"]) for row in reloaded], [float(row["csa_mm2"]) for row in run], rtol=1e-5)
    chart2 = mrml.find_output(volume2, "csa_chart")
    assert chart2.GetNthPlotSeriesNode(0).GetTableNode() is table2
    count = loaded.scene.GetNumberOfNodes()
    rerun = mrml.segment_volume_node(volume2, probability=probability)  # a re-run after reload still updates in place
    assert loaded.scene.GetNumberOfNodes() == count
    assert (rerun.probability_volume, rerun.segmentation, rerun.csa_table) == (prob2, segmentation2, table2)
    loaded.close()


def compare_with_cli_csv(table_node, csv_path, tolerance=1e-6):
    """The Slicer table equals `softseg csa`'s CSV row by row, matched on z_mm (the K axis may be flipped).

    The CSV prints 6 decimals (half a unit of the last digit is 5e-7), so 1e-6 holds for the same input.
    """
    expected = read_csv(csv_path)
    assert table_node.GetNumberOfRows() == len(expected)
    columns = [table_node.GetColumnName(i) for i in range(table_node.GetNumberOfColumns())]
    assert columns == list(expected[0].keys())
    names = ("z_mm", "csa_mm2", "angle_ap_deg", "angle_rl_deg", "diameter_ap_mm", "diameter_ap_ellipse_mm",
             "diameter_rl_mm", "eccentricity", "solidity", "orientation_deg", "length_mm", "x_mm", "y_mm")
    values = {name: slicer.util.arrayFromTableColumn(table_node, name) for name in names}
    for row in expected:
        index = int(np.argmin(np.abs(values["z_mm"] - float(row["z_mm"]))))
        for name in names:
            expected_value = float(row[name]) if row[name] else np.nan  # empty: no >= 0.5 pixel in the slice
            assert np.isnan(expected_value) == np.isnan(values[name][index]), (name, values[name][index], row[name])
            assert not abs(values[name][index] - expected_value) > tolerance, (name, values[name][index], row[name])


def run_cli_csa(mask_path, csv_path):
    from SoftSpinalCordSegLib.cli import main

    assert main(["csa", str(mask_path), "-o", str(csv_path), "--quiet"]) == 0


@pytest.mark.parametrize("axcodes, spacing", [("LAS", (0.8, 0.8, 2.0)), ("PSR", (3.0, 0.8, 0.8))])
def test_table_equals_cli_csv_for_left_handed_and_sagittal_phantoms(app, write_phantom, tmp_path, axcodes, spacing):
    path, volume, probability = phantom_input(app, write_phantom, axcodes=axcodes, spacing=spacing)
    outputs = mrml.segment_volume_node(volume, probability=probability)
    run_cli_csa(path, tmp_path / "cli.csv")
    compare_with_cli_csv(outputs.csa_table, tmp_path / "cli.csv")


@pytest.mark.parametrize("relative", ["real/tutorial/t2_ms.nii.gz", "real/tutorial/t2_lumbar.nii.gz"])
def test_real_left_handed_and_sagittal_volumes_match_cli(app, shared_file, tmp_path, relative):
    """Real files as Slicer loads them (t2_ms is LAS: Slicer flips its K axis; t2_lumbar is sagittal)."""
    from SoftSpinalCordSegLib.io import load_volume, save_like
    from SoftSpinalCordSegLib.phantom import soft_mask

    path = shared_file(relative)
    file_volume = load_volume(path)
    centre = file_volume.affine[:3, :3] @ ((np.array(file_volume.array.shape) - 1) / 2) + file_volume.affine[:3, 3]
    shifted = file_volume.affine.copy()
    shifted[:3, 3] -= centre  # put the phantom cord in the middle of the field of view
    mask = soft_mask(CordPhantom(area_mm2=70.0, length_mm=60.0), file_volume.array.shape, shifted)
    mask_path = tmp_path / "mask.nii.gz"
    save_like(mask, file_volume, mask_path)

    volume = app.load_volume(str(path), "real")
    before = ijk_array(volume).copy()
    probability = ijk_array(app.load_volume(str(mask_path), "mask")).astype(np.float32).copy()
    # ITK (Slicer's reader) takes the voxel size from the header's pixdim and only the direction from the
    # sform; nibabel (the command line's) takes the sform as it is. In t2_ms the sform's slice column is
    # 7.4999979 mm long against pixdim 7.5, so the two IJK-to-RAS matrices place voxels up to 4e-5 mm apart.
    # Check that gap, then give the node the command line's matrix (in Slicer's voxel order: it flips K of
    # LAS files) so both sides measure the same input.
    cli_affine = load_volume(mask_path).affine
    voxel_map = np.round(np.linalg.inv(cli_affine) @ ijk_to_ras(volume))  # axis permutation / flips
    corners = np.array([[i, j, k, 1] for i in (0, probability.shape[0] - 1) for j in (0, probability.shape[1] - 1)
                        for k in (0, probability.shape[2] - 1)]).T
    gap = np.linalg.norm((ijk_to_ras(volume) - cli_affine @ voxel_map) @ corners, axis=0).max()
    assert gap < 1e-4, gap
    volume.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(cli_affine @ voxel_map))

    outputs = mrml.segment_volume_node(volume, probability=probability)
    run_cli_csa(mask_path, tmp_path / "cli.csv")
    compare_with_cli_csv(outputs.csa_table, tmp_path / "cli.csv")
    np.testing.assert_array_equal(ijk_array(volume), before)


def test_real_model_end_to_end(app, shared_file, tmp_path):
    """The shipped model on a real LAS volume, through the worker process, against the CLI on its output."""
    from SoftSpinalCordSegLib.io import load_volume
    from SoftSpinalCordSegLib.worker import segment_in_subprocess

    path = shared_file("real/tutorial/t2_ms.nii.gz")
    volume = app.load_volume(str(path), "t2_ms")
    before = ijk_array(volume).copy()
    try:
        outputs = mrml.segment_volume_node(volume, device="cpu", segmenter=segment_in_subprocess)
    except ModelNotInstalledError as error:
        pytest.skip(f"no trained model: {error}")
    probability = ijk_array(outputs.probability_volume)
    assert probability.min() >= 0.0 and probability.max() > 0.5
    np.testing.assert_array_equal(ijk_array(volume), before)
    median = np.median(outputs.csa.column("csa_mm2"))
    assert 30.0 < median < 150.0, median

    # The probability node saved by Slicer's own writer, measured by the command line, gives the same table.
    prob_path = tmp_path / "prob.nii.gz"
    storage = outputs.probability_volume.CreateDefaultStorageNode()
    storage.SetFileName(str(prob_path))
    assert storage.WriteData(outputs.probability_volume)
    assert load_volume(prob_path).array.shape[2] == probability.shape[2]
    run_cli_csa(prob_path, tmp_path / "cli.csv")
    # Not quite the same input: the NIfTI header holds the matrix in float32 (7 significant digits), which
    # moves positions ~100 mm from the origin and areas ~100 mm² by up to ~1e-5 (3e-6 measured on a phantom).
    compare_with_cli_csv(outputs.csa_table, tmp_path / "cli.csv", tolerance=5e-5)


# --- the worker process Slicer runs the model in ------------------------------------------------------------


def test_worker_protocol_lines_are_parsed():
    from SoftSpinalCordSegLib.worker import parse_line

    assert parse_line("PROGRESS 0.25 predicting slices\n") == parse_line("PROGRESS 0.2500 predicting slices")
    event = parse_line("PROGRESS 1.7 done")
    assert (event.kind, event.fraction, event.message) == ("PROGRESS", 1.0, "done")
    assert parse_line("DEVICE cpu no CUDA GPU found").message == "cpu no CUDA GPU found"
    assert parse_line("ERROR InputError the image is constant").kind == "ERROR"
    assert parse_line("PROGRESS abc").kind == "LOG" and parse_line("Traceback (most recent call last):").kind == "LOG"


def test_worker_error_reaches_the_caller_as_one_line_and_cancel_kills_it():
    from SoftSpinalCordSegLib.errors import CancelledError
    from SoftSpinalCordSegLib.worker import WorkerProcess, segment_in_subprocess

    with pytest.raises(InputError, match="constant"):  # a bad input: the worker's one-line error, no traceback
        segment_in_subprocess(np.zeros((8, 8, 8), np.float32), np.eye(4), device="cpu")

    worker = WorkerProcess(np.ones((8, 8, 8), np.float32), np.eye(4), device="cpu")
    directory = worker._directory
    worker.cancel()
    assert not worker.running and worker._process.returncode != 0
    assert not directory.exists()  # no temporary files left
    with pytest.raises(CancelledError):
        worker.result()


def _live_processes_in_group(group):
    """Pids of the running (not zombie) processes of a process group, from /proc."""
    from pathlib import Path

    live = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            live.append(int(stat.parent.name))
    return live


def _executable(path, text):
    path.write_text(text)
    path.chmod(0o755)
    return str(path)


def test_cancel_kills_a_launchers_child_and_failures_are_one_line(tmp_path):
    """Slicer starts the worker through PythonSlicer, a launcher that runs Python as its child: cancel must
    stop that child too. An unexpected failure in the worker arrives as one line, a failed start as an error."""
    import os
    import sys
    import time

    from SoftSpinalCordSegLib.worker import WorkerProcess

    launcher = _executable(tmp_path / "launcher.sh", f'#!/bin/sh\n"{sys.executable}" "$@"\n')  # no exec: stays the parent
    image = np.random.default_rng(0).random((96, 96, 600)).astype(np.float32)
    worker = WorkerProcess(image, np.eye(4), device="cpu", python=launcher)
    deadline = time.time() + 60
    while not any(event.kind == "PROGRESS" for event in worker.poll()) and time.time() < deadline:
        time.sleep(0.05)  # the model is running in the launcher's child
    started = time.time()
    worker.cancel()
    assert time.time() - started < 2 and not worker.running
    time.sleep(0.2)
    assert _live_processes_in_group(worker._process.pid) == []  # the launcher's child is gone too

    failing = _executable(tmp_path / "failing_python", f"""#!{sys.executable}
import sys
import SoftSpinalCordSegLib.inference as inference
from SoftSpinalCordSegLib import worker

def broken(*args, **kwargs):
    raise ValueError("an unforeseen failure\\nsecond line")

inference.segment_image = broken
sys.exit(worker.main(sys.argv[4:]))
""")
    worker = WorkerProcess(np.random.rand(8, 8, 8).astype(np.float32), np.eye(4), device="cpu", python=failing,
                           env={**os.environ, "PYTHONPATH": str(mrml.__file__).rsplit("/SoftSpinalCordSegLib", 1)[0]})
    with pytest.raises(InputError) as error:
        worker.result()
    assert str(error.value) == "segmentation failed: ValueError: an unforeseen failure"
    assert any("Traceback" in line for line in worker.log)  # the details stay in the worker's log

    with pytest.raises(InputError, match="cannot start the segmentation process"):
        WorkerProcess(np.ones((4, 4, 4), np.float32), np.eye(4), python=str(tmp_path / "no_such_python"))


def test_a_workers_result_can_be_read_twice(random_model):
    from SoftSpinalCordSegLib.worker import WorkerProcess

    worker = WorkerProcess(np.random.default_rng(1).random((16, 16, 4)).astype(np.float32), np.eye(4), device="cpu")
    first = worker.result()
    np.testing.assert_array_equal(worker.result(), first)
    assert first.shape == (16, 16, 4) and not worker._directory.exists()


def test_a_worker_reads_both_polarities_by_default_and_once_when_asked(random_model):
    from SoftSpinalCordSegLib.worker import WorkerProcess

    image = np.random.default_rng(2).random((40, 32, 4)).astype(np.float32)
    maps = [WorkerProcess(array, np.eye(4), device="cpu", largest_component=False).result()
            for array in (image, image.max() - image)]
    np.testing.assert_allclose(maps[0], maps[1], atol=5e-3)  # bf16 arithmetic
    single = WorkerProcess(image, np.eye(4), device="cpu", largest_component=False, both_polarities=False).result()
    assert np.abs(single - maps[0]).max() > 1e-3  # the option reached the worker


def test_a_frame_of_a_sequence_is_refused_until_cloned(app, write_phantom):
    """A 4D image loaded as a sequence shows one frame in its proxy volume: which frame to segment is chosen (as
    `softseg segment --volume N`), not whichever is on show, whose outputs browsing would leave behind."""
    _, volume, _ = phantom_input(app, write_phantom)
    sequence = app.scene.AddNewNodeByClass("vtkMRMLSequenceNode", "series")
    for index in range(3):
        sequence.SetDataNodeAtValue(volume, str(index))
    app.scene.RegisterNodeClass(slicer.vtkMRMLSequenceBrowserNode())  # Slicer's Sequences module registers it
    browser = app.scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", "browser")
    browser.SetAndObserveMasterSequenceNodeID(sequence.GetID())
    proxy = app.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "series proxy")
    proxy.Copy(volume)
    proxy.SetName("series proxy")
    browser.AddProxyNode(proxy, sequence, False)
    browser.SetSelectedItemNumber(1)
    count = app.scene.GetNumberOfNodes()
    with pytest.raises(InputError, match=r"input 'series proxy' shows frame 2 of 3 of a sequence .* Clone"):
        mrml.volume_array_and_affine(proxy)
    assert app.scene.GetNumberOfNodes() == count
    image, _ = mrml.volume_array_and_affine(volume)  # a volume of its own (the clone's case) is read
    assert image.shape == ijk_array(volume).shape


def test_a_killed_worker_says_so_without_an_empty_tail(tmp_path):
    """A worker killed by the system (the OOM killer's SIGKILL) prints nothing: its message ends with the
    reason, not with ': ' and no text; a worker that printed something before dying still shows it."""
    import sys

    from SoftSpinalCordSegLib.worker import WorkerProcess

    silent = _executable(tmp_path / "killed_python", f"#!{sys.executable}\nimport os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    worker = WorkerProcess(np.ones((4, 4, 4), np.float32), np.eye(4), device="cpu", python=silent)
    with pytest.raises(InputError) as error:
        worker.result()
    assert str(error.value) == "segmentation process failed (exit code -9) (killed by the system: out of memory?)"

    talking = _executable(tmp_path / "talking_python", f"#!{sys.executable}\nimport os, signal\n"
                          "print('loading the model', flush=True)\nprint('', flush=True)\nos.kill(os.getpid(), signal.SIGKILL)\n")
    worker = WorkerProcess(np.ones((4, 4, 4), np.float32), np.eye(4), device="cpu", python=talking)
    with pytest.raises(InputError) as error:
        worker.result()
    assert str(error.value) == ("segmentation process failed (exit code -9) (killed by the system: out of memory?): "
                                "loading the model")


def test_an_image_without_a_cord_is_refused_and_leaves_the_scene_as_it_was(app):
    """A bright ball in noise: the shipped model reads it at p 0.4 at most, so nothing is cord. Its summed
    probability (~45 mm² a slice) is no CSA: refused as `softseg segment` refuses it, with no node added and an
    earlier run's outputs unchanged; the same for an all-zero probability and a threshold nothing reaches."""
    volume = app.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "ball")
    volume.SetSpacing(1, 1, 3)
    i, j, k = np.indices((96, 96, 12))
    ball = (i - 47.5) ** 2 + (j - 47.5) ** 2 + (k - 5.5) ** 2 <= 30 ** 2
    image = np.where(ball, 100.0, 0.0) + np.random.RandomState(0).rand(96, 96, 12)
    slicer.util.updateVolumeFromArray(volume, np.ascontiguousarray(image.transpose(2, 1, 0)).astype(np.float32))
    cord = ((i - 47.5) ** 2 + (j - 47.5) ** 2 <= 25).astype(np.float32)  # an earlier run that found a cord
    earlier = mrml.segment_volume_node(volume, probability=cord)
    count = app.scene.GetNumberOfNodes()
    rows = earlier.csa_table.GetNumberOfRows()
    csa = slicer.util.arrayFromTableColumn(earlier.csa_table, "csa_mm2").copy()

    try:
        with pytest.raises(InputError) as error:
            mrml.segment_volume_node(volume, device="cpu")  # the shipped model, in this process
    except ModelNotInstalledError as missing:
        pytest.skip(f"no trained model: {missing}")
    message = "ball: no spinal cord was found in the image (no voxel reaches p 0.5), so no CSA can be measured"
    assert str(error.value) == message
    with pytest.raises(InputError) as error:
        mrml.segment_volume_node(volume, probability=np.zeros(cord.shape, np.float32))
    assert str(error.value) == message
    with pytest.raises(InputError, match=r"no voxel reaches the threshold p 0\.9 \(the most is p 0\.70\).*lower the threshold"):
        mrml.segment_volume_node(volume, probability=cord * 0.7, threshold=0.9)

    assert app.scene.GetNumberOfNodes() == count
    for role, node in (("probability", earlier.probability_volume), ("segmentation", earlier.segmentation),
                       ("csa", earlier.csa_table), ("csa_chart", earlier.csa_chart)):
        assert mrml.find_output(volume, role) is node
    np.testing.assert_array_equal(ijk_array(earlier.probability_volume), cord)
    np.testing.assert_array_equal(segment_labelmap(earlier.segmentation, volume), cord.astype(np.uint8))
    assert earlier.csa_table.GetNumberOfRows() == rows
    np.testing.assert_array_equal(slicer.util.arrayFromTableColumn(earlier.csa_table, "csa_mm2"), csa)


def test_a_rerun_without_a_per_level_result_removes_the_old_per_level_table(app, shared_file):
    """sub-unf01 T2w (its manual segmentation as the probability), measured with disc points on the cord, then
    again with disc points beyond the image: the old per-level table must not stay on show as if it were this
    run's. Unedited, it is removed; renamed by the user, it is kept but no longer an output of the input."""
    volume = app.load_volume(str(shared_file("real/unf01/sub-unf01_T2w.nii.gz")), "unf01")
    manual = app.load_volume(str(shared_file("real/unf01/sub-unf01_T2w_seg-manual.nii.gz")), "manual", labelmap=True)
    probability = ijk_array(manual).astype(np.float32).copy()
    csa = mrml.segment_volume_node(volume, probability=probability).csa
    x, y, z = (float(np.nanmedian(csa.column(name))) for name in ("x_mm", "y_mm", "z_mm"))

    def disc_points(name, offsets):
        node = app.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
        for offset, label in zip(offsets, ("C2/C3", "C3/C4", "C4/C5")):
            node.AddControlPoint(vtk.vtkVector3d(x, y, z + offset), label)
        return node

    on_cord, beyond = disc_points("on the cord", (30, 0, -30)), disc_points("beyond the image", (330, 300))
    first = mrml.segment_volume_node(volume, probability=probability, levels=on_cord)
    assert [first.level_table.GetCellText(row, 0) for row in range(first.level_table.GetNumberOfRows())] == ["3", "4"]
    assert mrml.find_output(volume, "csa_levels") is first.level_table
    table_id = first.level_table.GetID()

    missed = mrml.segment_volume_node(volume, probability=probability, levels=beyond)
    assert missed.level_table is None and "no per-level table" in missed.level_note
    assert mrml.find_output(volume, "csa_levels") is None  # the widget shows none
    assert app.scene.GetNodeByID(table_id) is None  # unedited: removed
    assert mrml.find_output(volume, "csa") is missed.csa_table is first.csa_table  # the rest updated in place
    assert app.scene.GetNodeByID(on_cord.GetID()) is on_cord and app.scene.GetNodeByID(beyond.GetID()) is beyond

    again = mrml.segment_volume_node(volume, probability=probability, levels=on_cord)
    again.level_table.SetName("unf01 levels, my copy")  # the user's now
    mrml.segment_volume_node(volume, probability=probability)  # no levels at all
    assert mrml.find_output(volume, "csa_levels") is None
    assert app.scene.GetNodeByID(again.level_table.GetID()) is again.level_table  # kept, unlinked
    assert again.level_table.GetAttribute(mrml.ROLE_ATTRIBUTE) is None
    assert again.level_table.GetNumberOfRows() == 2


def test_level_column_shows_and_exports_as_the_cli_writes_it(app, write_phantom, tmp_path):
    """The per-slice `level` is a whole number, or none where no level is known: the table shows '3' or an empty
    cell (not 3.0 or nan), and Export CSV writes the CLI's CSV, also after a .mrb save and reload."""
    _, volume, probability = phantom_input(app, write_phantom, axcodes="RAS")
    discs = app.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "discs")  # levels for the upper half only
    discs.AddControlPoint(vtk.vtkVector3d(0, 0, 30), "C2/C3")
    discs.AddControlPoint(vtk.vtkVector3d(0, 0, 0), "C3/C4")
    outputs = mrml.segment_volume_node(volume, probability=probability, levels=discs)
    levels = [row["level"] for row in outputs.csa.rows]
    assert None in levels and 3 in levels  # some slices with a level, some without
    table = outputs.csa_table
    column = table.GetColumnIndex("level")
    shown = [table.GetCellText(row, column) for row in range(table.GetNumberOfRows())]
    assert shown == ["" if level is None else str(level) for level in levels]
    _, other, other_probability = phantom_input(app, write_phantom, axcodes="LPS")
    other.SetName("other")
    plain = mrml.segment_volume_node(other, probability=other_probability)  # no levels at all: empty, not nan
    assert {plain.csa_table.GetCellText(row, column) for row in range(plain.csa_table.GetNumberOfRows())} == {""}

    outputs.csa.write_csv(tmp_path / "cli.csv")  # as `softseg csa --discs` writes it
    mrml.csa_table_of(table).write_csv(tmp_path / "export.csv")  # Export CSV
    assert (tmp_path / "export.csv").read_text() == (tmp_path / "cli.csv").read_text()
    cli_levels = [row["level"] for row in read_csv(tmp_path / "cli.csv")]
    assert "" in cli_levels and "3" in cli_levels

    bundle = tmp_path / "scene.mrb"
    assert app.scene.WriteToMRB(str(bundle))
    with mrml.HeadlessSlicer(str(tmp_path / "cache2")) as loaded:
        assert loaded.scene.ReadFromMRB(str(bundle))
        table2 = mrml.find_output(loaded.scene.GetFirstNode("phantom", "vtkMRMLScalarVolumeNode"), "csa")
        mrml.csa_table_of(table2).write_csv(tmp_path / "reloaded.csv")
        assert [row["level"] for row in read_csv(tmp_path / "reloaded.csv")] == cli_levels
        assert [row["slice"] for row in read_csv(tmp_path / "reloaded.csv")] == [row["slice"] for row in read_csv(tmp_path / "cli.csv")]

    # a table saved by an earlier release holds the levels as numbers, NaN where none: exported the same way
    old = vtk.vtkDoubleArray()
    old.SetName("level")
    for level in levels:
        old.InsertNextValue(np.nan if level is None else float(level))
    table.GetTable().RemoveColumnByName("level")
    table.GetTable().AddColumn(old)
    assert [row["level"] for row in mrml.csa_table_of(table).rows] == levels


def test_a_rerun_leaves_a_renamed_plot_series_and_an_edited_chart_alone(app, write_phantom, tmp_path):
    """The plot series and chart are outputs like the others: renamed or restyled, they are the user's and a
    re-run makes new ones; unedited, they are updated in place, also after a .mrb save and reload. The series
    is not named as the table is."""
    _, volume, probability = phantom_input(app, write_phantom)
    first = mrml.segment_volume_node(volume, probability=probability)
    series = first.csa_chart.GetNthPlotSeriesNode(0)
    assert series.GetName() == "phantom CSA series" != first.csa_table.GetName()
    assert mrml.segment_volume_node(volume, probability=probability).csa_chart.GetNthPlotSeriesNode(0) is series
    series.SetName("phantom CSA")  # as an earlier release named it, with no digest
    series.RemoveAttribute(mrml.WRITTEN_ATTRIBUTE)
    assert mrml.segment_volume_node(volume, probability=probability).csa_chart.GetNthPlotSeriesNode(0) is series
    assert series.GetName() == "phantom CSA series"
    series.SetName("phantom, before treatment")  # an earlier release's series that its user renamed keeps the name
    series.RemoveAttribute(mrml.WRITTEN_ATTRIBUTE)
    mrml.segment_volume_node(volume, probability=probability)
    assert series.GetName() == "phantom, before treatment"
    series.SetName("phantom CSA series")
    mrml.segment_volume_node(volume, probability=probability)

    series.SetName("phantom CSA, before treatment")
    series.SetColor(0.1, 0.2, 0.9)
    second = mrml.segment_volume_node(volume, probability=probability)
    new_series = second.csa_chart.GetNthPlotSeriesNode(0)
    assert new_series is not series and new_series.GetName() == "phantom CSA series"
    assert mrml.find_output(volume, "csa_series") is new_series
    assert series.GetName() == "phantom CSA, before treatment" and series.GetColor() == pytest.approx((0.1, 0.2, 0.9))
    assert app.scene.GetNodeByID(series.GetID()) is series and series.GetTableNode() is second.csa_table

    second.csa_chart.SetTitle("my comparison")
    second.csa_chart.AddAndObservePlotSeriesNodeID(series.GetID())
    third = mrml.segment_volume_node(volume, probability=probability)
    assert third.csa_chart is not second.csa_chart and mrml.find_output(volume, "csa_chart") is third.csa_chart
    assert second.csa_chart.GetTitle() == "my comparison" and second.csa_chart.GetNumberOfPlotSeriesNodes() == 2
    assert third.csa_chart.GetNumberOfPlotSeriesNodes() == 1
    assert third.csa_chart.GetNthPlotSeriesNode(0) is new_series  # unedited: updated in place

    bundle = tmp_path / "scene.mrb"
    assert app.scene.WriteToMRB(str(bundle))
    with mrml.HeadlessSlicer(str(tmp_path / "cache2")) as loaded:
        assert loaded.scene.ReadFromMRB(str(bundle))
        volume2 = loaded.scene.GetFirstNode("phantom", "vtkMRMLScalarVolumeNode")
        chart2, series2 = mrml.find_output(volume2, "csa_chart"), mrml.find_output(volume2, "csa_series")
        chart2_id, series2_id = chart2.GetID(), series2.GetID()
        count = loaded.scene.GetNumberOfNodes()
        rerun = mrml.segment_volume_node(volume2, probability=probability)
        assert loaded.scene.GetNumberOfNodes() == count
        assert rerun.csa_chart is chart2 and rerun.csa_chart.GetNthPlotSeriesNode(0) is series2
    with mrml.HeadlessSlicer(str(tmp_path / "cache3")) as busy:  # imported beside other plots: the IDs move
        while busy.scene.GetNodeByID(chart2_id) is None or busy.scene.GetNodeByID(series2_id) is None:
            busy.scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", "another series")
            busy.scene.AddNewNodeByClass("vtkMRMLPlotChartNode", "another chart")
        assert busy.scene.ReadFromMRB(str(bundle), False)
        volume3 = busy.scene.GetFirstNode("phantom", "vtkMRMLScalarVolumeNode")
        chart3 = mrml.find_output(volume3, "csa_chart")
        assert chart3.GetID() != chart2_id
        charts = busy.scene.GetNumberOfNodesByClass("vtkMRMLPlotChartNode")
        assert mrml.segment_volume_node(volume3, probability=probability).csa_chart is chart3
        assert busy.scene.GetNumberOfNodesByClass("vtkMRMLPlotChartNode") == charts
