"""Soft cord segmentation of a volume node, with its results as native MRML nodes.

`segment_volume_node` needs a real MRML scene (3D Slicer, or the `slicer-core` wheel) but neither Qt nor
`slicer.app`: the Slicer module, the tests and scripts all call it. `HeadlessSlicer` builds a scene with the
module logics that Slicer's application would otherwise register, for tests and for headless scripts.

Outputs carry an attribute naming their role and a node reference to the input, so a re-run on the same
input finds and updates them instead of adding new nodes; the input node itself is never modified. An output
the user has since renamed or edited (painted the segment, added a table column), or a copy of one, is theirs:
a re-run leaves it as it is and makes a new output.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from .errors import InputError

ROLE_ATTRIBUTE = "SoftSpinalCordSeg.Role"
WRITTEN_ATTRIBUTE = "SoftSpinalCordSeg.Written"  # digest of what the last run wrote into an output
SOURCE_REFERENCE_ROLE = "SoftSpinalCordSegSource"
COLOR_TABLE_NAME = "SoftSpinalCordSeg Inferno"
SEGMENT_ID = "spinal_cord"
SEGMENT_NAME = "spinal cord"
SEGMENT_COLOR = (0.95, 0.84, 0.19)
# DICOM / SNOMED-CT code of the spinal cord, in Slicer's terminology string format.
SEGMENT_TERMINOLOGY = (
    "Segmentation category and type - DICOM master list"
    "~SCT^123037004^Anatomical Structure~SCT^2748008^Spinal cord~^^"
    "~Anatomic codes - DICOM master list~^^~^^|"
)
CSA_X_COLUMN = "z_mm"
CSA_Y_COLUMN = "csa_mm2"
# Inferno (perceptually uniform, dark to bright yellow) sampled at 9 evenly spaced points.
INFERNO_ANCHORS = (
    (0.001, 0.000, 0.014), (0.129, 0.047, 0.291), (0.342, 0.062, 0.429),
    (0.541, 0.135, 0.415), (0.736, 0.216, 0.330), (0.894, 0.353, 0.194),
    (0.978, 0.558, 0.035), (0.975, 0.798, 0.206), (0.988, 0.998, 0.645),
)


@dataclass
class SegmentationOutputs:
    """The nodes made (or updated) by `segment_volume_node`, all in the input's scene."""

    probability_volume: Any
    segmentation: Any
    csa_table: Any
    csa_chart: Any
    level_table: Any = None  # per-level summary, only when levels were given
    csa: Any = None  # the library's CsaTable behind csa_table
    level_note: str = ""  # why there is no per-level table though levels were given
    disc_points: Any = None  # with levels="auto": the markups node of the discs found (move them, then remeasure_levels)
    confidence_note: str = ""  # inference.low_confidence_note: what was marked is unlike a real cord


def segment_volume_node(
    volume_node,
    *,
    threshold: float = 0.5,
    opacity: float = 0.6,
    floor: float = 0.05,
    device: str = "auto",
    levels=None,
    largest_component: bool = True,
    both_polarities: bool = True,
    probability: Optional[np.ndarray] = None,
    segmenter: Optional[Callable] = None,
    progress: Optional[Callable[[float, str], None]] = None,
) -> SegmentationOutputs:
    """Segment the cord in `volume_node` and show the soft result, the binary segment and the CSA along the cord.

    threshold: probability from which a voxel belongs to the binary segment; opacity: of the overlay;
    floor: probabilities below it are transparent in the overlay; levels: optional vertebral levels, a label
    volume node (PAM50 codes, any grid), a markups point list of disc points named like "C2/C3", or "auto" to
    find the discs in the image (vertebrae.py): they become the markups node `disc_points`, which the user can
    move and then re-measure with `remeasure_levels` (the network does not run again).
    both_polarities: read each slice as it is and inverted, and average (False: once; see segment_image).
    probability: a precomputed soft mask in the input's voxel order (i, j, k), instead of running the model;
    segmenter: the function that computes it (default `inference.segment_image`).
    """
    _check_options(threshold, opacity, floor)
    image, affine = volume_array_and_affine(volume_node)
    automatic = isinstance(levels, str)
    level_array, discs = level_inputs(levels, volume_node) if levels is not None else (None, None)
    if probability is None:
        if segmenter is None:
            from .inference import segment_image as segmenter
        probability = segmenter(image, affine, device=device, largest_component=largest_component,
                                both_polarities=both_polarities, progress=progress)
    probability = _checked_probability(probability, image.shape)
    _check_cord_found(volume_node, probability, threshold)
    if progress:
        progress(0.95, "building the scene outputs")

    from .morphometry import compute_csa

    labelling = None
    if automatic:
        from .vertebrae import detect_discs

        if progress:
            progress(0.96, "finding the vertebral discs")
        labelling = detect_discs(image, _level_affine(volume_node), probability)
        discs = labelling.level_points() or None
    # Positions as the views show them (disc points are in world coordinates too).
    csa = compute_csa(probability, world_affine(volume_node), levels=level_array, discs=discs)
    per_level, level_note = None, ""
    if labelling is not None and not labelling.ok:
        from .vertebrae import describe

        level_note = describe(labelling)
    elif levels is not None:
        try:
            per_level = csa.summarize(per_level=True)
        except InputError as error:  # levels that miss the cord: the segmentation is still worth keeping
            level_note = f"no per-level table: {error}"
    scene = volume_node.GetScene()
    # the disc points being re-measured (remeasure_levels) stay this input's, whatever the result
    remeasured = levels is not None and not automatic and levels is find_output(volume_node, "discs")
    with _removed_on_failure(scene):
        outputs = _write_outputs(volume_node, probability, threshold, opacity, floor, csa, per_level, level_note,
                                 affine)
        if labelling is not None and labelling.ok:
            outputs.disc_points = _update_disc_points(volume_node, discs)
        # last: a failure above leaves an earlier run's outputs in place
        if per_level is None:
            _retire_output(volume_node, "csa_levels")
        if outputs.disc_points is None and not remeasured:
            _retire_output(volume_node, "discs")
    if progress:
        progress(1.0, "done")
    return outputs


def _write_outputs(volume_node, probability, threshold, opacity, floor, csa, per_level, level_note, affine):
    from .inference import low_confidence_note

    scene = volume_node.GetScene()
    name = volume_node.GetName()
    outputs = SegmentationOutputs(
        probability_volume=_update_probability_volume(volume_node, probability, opacity, floor),
        segmentation=_update_segmentation(volume_node, probability >= threshold),
        csa_table=_update_table(volume_node, "csa", f"{name} CSA", csa),
        csa_chart=None,
        csa=csa,
        level_note=level_note,
        confidence_note=low_confidence_note(probability, affine),
    )
    outputs.csa_chart = _update_chart(volume_node, outputs.csa_table)
    if per_level is not None:
        outputs.level_table = _update_table(volume_node, "csa_levels", f"{name} CSA per level", per_level)
    for node in (outputs.probability_volume, outputs.segmentation, outputs.csa_table, outputs.level_table):
        if node is not None:
            node.SetAttribute(WRITTEN_ATTRIBUTE, _written_digest(node))
    _place_in_subject_hierarchy(scene, volume_node)
    return outputs


@contextmanager
def _removed_on_failure(scene):
    """Remove the nodes added inside the block when it raises: a failed run leaves no partial outputs."""
    before = {scene.GetNthNode(index).GetID() for index in range(scene.GetNumberOfNodes())}
    try:
        yield
    except BaseException:
        # data nodes first (in the order added): a volume left without its display node gets a new one
        nodes = [scene.GetNthNode(index) for index in range(scene.GetNumberOfNodes())]
        for node in [node for node in nodes if node.GetID() not in before]:
            if scene.IsNodePresent(node):
                scene.RemoveNode(node)
        raise


def sequence_frame(node):
    """(index of the frame shown, number of frames) where node is the proxy of a sequence browser, else None."""
    scene = node.GetScene()
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSequenceBrowserNode")):
        browser = scene.GetNthNodeByClass(index, "vtkMRMLSequenceBrowserNode")
        if browser.IsProxyNodeID(node.GetID()):
            return browser.GetSelectedItemNumber(), browser.GetNumberOfItems()
    return None


def volume_array_and_affine(volume_node):
    """Copy of the node's voxels in file order (i, j, k) and its 4x4 IJK-to-RAS matrix."""
    import slicer
    import vtk

    if volume_node is None:
        raise InputError("no input volume selected")
    if not volume_node.IsA("vtkMRMLScalarVolumeNode") or volume_node.IsA("vtkMRMLLabelMapVolumeNode"):
        raise InputError(f"input '{volume_node.GetName()}' is not a scalar (grey-level) volume")
    if volume_node.GetScene() is None:
        raise InputError(f"input '{volume_node.GetName()}' is not in a scene")
    frame = sequence_frame(volume_node)
    if frame is not None:  # as `softseg segment` asks for --volume N: the frame is chosen, not the one on show
        raise InputError(f"input '{volume_node.GetName()}' shows frame {frame[0] + 1} of {frame[1]} of a sequence (a 4D "
                         "image): make the frame to segment a volume of its own (Data module: right-click it, Clone) "
                         "and segment that volume")
    image_data = volume_node.GetImageData()
    if image_data is None or image_data.GetNumberOfScalarComponents() != 1:
        raise InputError(f"input '{volume_node.GetName()}' has no single-component image data")
    if min(image_data.GetDimensions()) < 2:
        raise InputError(f"input '{volume_node.GetName()}' is not a 3D volume (dimensions {image_data.GetDimensions()})")
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return np.array(slicer.util.arrayFromVolume(volume_node).transpose(2, 1, 0)), slicer.util.arrayFromVTKMatrix(matrix)


def world_affine(volume_node):
    """IJK-to-world matrix of a volume: its IJK-to-RAS under its parent transform where that is linear, so that
    CSA positions, levels and disc points are where the views show them. Under a non-linear transform, the
    untransformed IJK-to-RAS."""
    import slicer
    import vtk

    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    affine = slicer.util.arrayFromVTKMatrix(matrix)
    transform = volume_node.GetParentTransformNode()
    if transform is not None and transform.IsTransformToWorldLinear():
        transform.GetMatrixTransformToWorld(matrix)
        affine = slicer.util.arrayFromVTKMatrix(matrix) @ affine
    return affine


def find_output(volume_node, role: str):
    """The output node with this role made from `volume_node` by an earlier run, or None."""
    scene = volume_node.GetScene()
    for index in range(scene.GetNumberOfNodes()):
        node = scene.GetNthNode(index)
        if node.GetAttribute(ROLE_ATTRIBUTE) == role and node.GetNodeReference(SOURCE_REFERENCE_ROLE) is volume_node:
            return node
    return None


def _output_node(volume_node, role: str, class_name: str, name: str):
    node = find_output(volume_node, role)
    while node is not None and node.GetAttribute(WRITTEN_ATTRIBUTE) not in (None, _written_digest(node)):
        node.RemoveAttribute(ROLE_ATTRIBUTE)  # changed since the run wrote it: the user's now
        node.RemoveAttribute(WRITTEN_ATTRIBUTE)
        node = find_output(volume_node, role)
    if node is None:
        node = volume_node.GetScene().AddNewNodeByClass(class_name, name)
        node.SetAttribute(ROLE_ATTRIBUTE, role)
        node.SetNodeReferenceID(SOURCE_REFERENCE_ROLE, volume_node.GetID())
    return node


def _retire_output(volume_node, role: str) -> None:
    """An earlier run's output that this run does not make again (a per-level table, automatic disc points) must
    not stay on show beside the new results: removed where the run wrote it and the user left it as it was;
    kept, but no longer an output of the input, where the user renamed or edited it (their points are never
    deleted)."""
    node = find_output(volume_node, role)
    while node is not None:
        if node.GetAttribute(WRITTEN_ATTRIBUTE) == _written_digest(node):
            volume_node.GetScene().RemoveNode(node)
        else:
            node.RemoveAttribute(ROLE_ATTRIBUTE)
            node.RemoveAttribute(WRITTEN_ATTRIBUTE)
        node = find_output(volume_node, role)


def _written_digest(node) -> str:
    """Digest of an output's name and content (voxels, cord segment, disc points, table cells, plot series style,
    chart titles and series): it changes when the user renames or edits the node, and differs on a copy."""
    import hashlib

    import slicer
    from vtk.util.numpy_support import vtk_to_numpy

    digest = hashlib.sha1(node.GetName().encode())
    if node.IsA("vtkMRMLScalarVolumeNode"):
        digest.update(np.ascontiguousarray(slicer.util.arrayFromVolume(node)).tobytes())
    elif node.IsA("vtkMRMLSegmentationNode"):
        labelmap = slicer.vtkOrientedImageData()
        if node.GetSegmentation().GetSegment(SEGMENT_ID) is not None:
            node.GetBinaryLabelmapRepresentation(SEGMENT_ID, labelmap)
        digest.update(str(labelmap.GetExtent()).encode())
        if labelmap.GetPointData().GetScalars() is not None:
            digest.update(vtk_to_numpy(labelmap.GetPointData().GetScalars()).tobytes())
    elif node.IsA("vtkMRMLMarkupsNode"):
        for index in range(node.GetNumberOfControlPoints()):
            position = [0.0, 0.0, 0.0]
            node.GetNthControlPointPosition(index, position)
            digest.update(f"|{node.GetNthControlPointLabel(index)}:{_rounded(position)}".encode())
    elif node.IsA("vtkMRMLPlotSeriesNode"):
        digest.update(f"|{node.GetXColumnName()}|{node.GetYColumnName()}|{node.GetPlotType()}|{node.GetMarkerStyle()}|"
                      f"{node.GetLineStyle()}|{_rounded([node.GetMarkerSize(), node.GetLineWidth(), *node.GetColor()])}"
                      .encode())
    elif node.IsA("vtkMRMLPlotChartNode"):
        # series by name, not ID: importing a scene renames IDs (vtkMRMLPlotSeriesNode2) but not what the user sees
        series = [getattr(node.GetNthPlotSeriesNode(index), "GetName", str)()
                  for index in range(node.GetNumberOfPlotSeriesNodes())]
        digest.update(f"|{node.GetTitle()}|{node.GetXAxisTitle()}|{node.GetYAxisTitle()}|{node.GetLegendVisibility()}|"
                      f"{series}".encode())
    elif node.IsA("vtkMRMLTableNode"):
        table = node.GetTable()
        for index in range(table.GetNumberOfColumns()):
            column = table.GetColumn(index)
            digest.update(f"|{column.GetName()}:".encode())
            digest.update(",".join(column.GetVariantValue(row).ToString() for row in range(column.GetNumberOfTuples())).encode())
    return digest.hexdigest()


def _rounded(values, decimals: int = 3) -> str:
    """Numbers as text to `decimals` places (1e-3 mm for positions): a saved and reloaded scene (the markups
    file changes the last bits of a position) gives the same digest, while any real edit changes it."""
    return ",".join(f"{round(float(value), decimals) + 0.0:.{decimals}f}" for value in values)  # + 0.0: no -0.000


def _check_options(threshold, opacity, floor):
    if not 0.0 < threshold < 1.0:
        raise InputError(f"threshold must be between 0 and 1 (exclusive), got {threshold}")
    if not 0.0 <= opacity <= 1.0:
        raise InputError(f"opacity must be between 0 and 1, got {opacity}")
    if not 0.0 <= floor < 1.0:
        raise InputError(f"overlay floor must be in [0, 1), got {floor}")


def _check_cord_found(volume_node, probability, threshold):
    """Refuse a probability that marks no cord, before any node is made or changed: its CSA would be the sum
    of a faint reading (as `softseg segment` refuses it, in the same words), and its segment would be empty."""
    from .inference import NO_CORD, cord_found

    name = volume_node.GetName()
    if not cord_found(probability):
        raise InputError(f"{name}: {NO_CORD}, so no CSA can be measured")
    if not np.any(probability >= threshold):
        raise InputError(f"{name}: no voxel reaches the threshold p {threshold:g} (the most is p "
                         f"{float(probability.max()):.2f}), so the cord segment would be empty: lower the threshold")


def _checked_probability(probability, shape):
    probability = np.asarray(probability, dtype=np.float32)
    if probability.shape != tuple(shape):
        raise InputError(f"probability shape {probability.shape} does not match the volume {tuple(shape)}")
    tolerance = 1e-5  # float rounding of a model output; anything further out is a wrong input
    if not np.all(np.isfinite(probability)) or probability.min() < -tolerance or probability.max() > 1.0 + tolerance:
        raise InputError("probability values must be finite and within [0, 1]")
    return np.clip(probability, 0.0, 1.0)  # as `softseg segment` does before measuring


# --- probability overlay -----------------------------------------------------------------------------------


def _update_probability_volume(volume_node, probability, opacity, floor):
    import slicer
    import vtk

    node = _output_node(volume_node, "probability", "vtkMRMLScalarVolumeNode", f"{volume_node.GetName()} cord probability")
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    node.SetIJKToRASMatrix(matrix)
    node.SetAndObserveTransformNodeID(volume_node.GetTransformNodeID())
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(probability.transpose(2, 1, 0)))

    display = node.GetDisplayNode()
    if display is None:
        node.CreateDefaultDisplayNodes()
        display = node.GetDisplayNode()
    display.SetAndObserveColorNodeID(inferno_color_table(volume_node.GetScene()).GetID())
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(0.0, 1.0)
    display.SetThreshold(floor, 1.0)
    display.ApplyThresholdOn()  # voxels under the floor become transparent
    display.SetInterpolate(True)
    display.SetOpacity(opacity)
    show_as_foreground(volume_node, node, opacity)
    return node


def inferno_color_table(scene):
    """The module's Inferno colour table (created once per scene)."""
    existing = scene.GetFirstNode(COLOR_TABLE_NAME, "vtkMRMLColorTableNode")
    if existing is not None:
        return existing
    table = scene.AddNewNodeByClass("vtkMRMLColorTableNode", COLOR_TABLE_NAME)
    table.SetTypeToUser()
    table.SetAttribute("Category", "SoftSpinalCordSeg")
    count = 256
    table.SetNumberOfColors(count)
    anchors = np.array(INFERNO_ANCHORS)
    positions = np.linspace(0.0, 1.0, len(anchors))
    for index, value in enumerate(np.linspace(0.0, 1.0, count)):
        rgb = [np.interp(value, positions, anchors[:, channel]) for channel in range(3)]
        table.SetColor(index, f"p{value:.3f}", *rgb, 1.0)
    return table


def show_as_foreground(background_node, foreground_node, opacity):
    """Show the overlay over its input in every slice view (the input becomes the background: an overlay over
    another image would mislead)."""
    for composite in _slice_composites(background_node.GetScene()):
        composite.SetBackgroundVolumeID(background_node.GetID())
        composite.SetForegroundVolumeID(foreground_node.GetID())
        composite.SetForegroundOpacity(opacity)


def set_overlay_opacity(volume_node, opacity: float) -> None:
    """Apply a new overlay opacity to the input's earlier result, where the slice views show it."""
    overlay = find_output(volume_node, "probability")
    if overlay is None or overlay.GetDisplayNode() is None:
        return
    overlay.GetDisplayNode().SetOpacity(opacity)
    for composite in _slice_composites(volume_node.GetScene()):
        if composite.GetForegroundVolumeID() == overlay.GetID():
            composite.SetForegroundOpacity(opacity)


def _slice_composites(scene):
    """The slice views' composite nodes (what each view shows as background and foreground)."""
    return [scene.GetNthNodeByClass(index, "vtkMRMLSliceCompositeNode")
            for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode"))]


# --- binary segmentation -----------------------------------------------------------------------------------


def _update_segmentation(volume_node, mask):
    import slicer
    import vtk
    from vtk.util.numpy_support import vtk_to_numpy

    node = _output_node(volume_node, "segmentation", "vtkMRMLSegmentationNode", f"{volume_node.GetName()} cord segmentation")
    node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    node.SetAndObserveTransformNodeID(volume_node.GetTransformNodeID())
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    segmentation = node.GetSegmentation()
    if segmentation.GetSegment(SEGMENT_ID) is None:
        segmentation.AddEmptySegment(SEGMENT_ID, SEGMENT_NAME, SEGMENT_COLOR)
    segment = segmentation.GetSegment(SEGMENT_ID)
    segment.SetTag(segment.GetTerminologyEntryTagName(), SEGMENT_TERMINOLOGY)  # SetTerminology: Slicer 5.10+

    labelmap = slicer.vtkOrientedImageData()
    labelmap.SetDimensions(*mask.shape)
    labelmap.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    vtk_to_numpy(labelmap.GetPointData().GetScalars())[:] = mask.transpose(2, 1, 0).ravel()
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    labelmap.SetImageToWorldMatrix(matrix)
    mode = slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE
    if not slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(labelmap, node, SEGMENT_ID, mode):
        raise InputError("could not store the cord segment in the segmentation node")

    segmentation.CreateRepresentation("Closed surface", True)  # rebuilt on every run
    display = node.GetDisplayNode()
    display.SetPreferredDisplayRepresentationName3D("Closed surface")
    display.SetVisibility3D(True)
    return node


# --- CSA table, per-level summary and plot -----------------------------------------------------------------


def _update_table(volume_node, role, name, table):
    """Fill a table node with a library Table: whole-number columns as integers, other numeric columns as
    numbers (NaN where empty), the rest as text. A whole-number column with empty cells (the `level` of slices
    no level reaches) and a column with no value at all are text, an empty cell where the CSV has one: an
    integer column cannot hold "none", and a number column would show nan and export 3.000000."""
    import vtk

    node = _output_node(volume_node, role, "vtkMRMLTableNode", name)
    vtk_table = vtk.vtkTable()
    for column in table.columns:
        values = [row.get(column) for row in table.rows]
        present = [value for value in values if value is not None]
        whole = all(isinstance(value, (int, np.integer)) and not isinstance(value, bool) for value in present)
        if present and whole and len(present) == len(values):
            array = vtk.vtkIntArray()
        elif present and not whole and all(isinstance(value, (int, float, np.number)) for value in present):
            array = vtk.vtkDoubleArray()
            values = [np.nan if value is None else value for value in values]
        else:
            array = vtk.vtkStringArray()
            values = ["" if value is None else str(value) for value in values]
        array.SetName(column)
        for value in values:
            array.InsertNextValue(value)
        vtk_table.AddColumn(array)
    node.SetAndObserveTable(vtk_table)
    node.SetUseColumnTitleAsColumnHeader(True)
    return node


def csa_table_of(table_node):
    """The library's CsaTable behind a CSA table node (made by a run, or reloaded with a scene), to export it
    as `softseg csa` writes it."""
    from .morphometry import CsaTable

    whole_numbers = ("slice", "level")  # as CsaTable.read_csv reads them; text, or numbers in older scenes
    table = table_node.GetTable()
    columns = {table.GetColumnName(index): table.GetColumn(index) for index in range(table.GetNumberOfColumns())}
    rows = []
    for row in range(table.GetNumberOfRows()):
        values = {}
        for name, column in columns.items():
            value = column.GetValue(row)
            if column.IsA("vtkStringArray"):
                value = value or None
            elif column.IsA("vtkIntArray"):
                value = int(value)
            else:
                value = None if np.isnan(value) else float(value)
            if name in whole_numbers and value is not None:
                value = int(float(value))
            values[name] = value
        rows.append(values)
    return CsaTable(rows)


def _update_chart(volume_node, table_node):
    scene = volume_node.GetScene()
    name = f"{volume_node.GetName()} CSA series"  # not the table's name, "<input> CSA"
    series = _output_node(volume_node, "csa_series", "vtkMRMLPlotSeriesNode", name)
    if series.GetAttribute(WRITTEN_ATTRIBUTE) is None and series.GetName() == f"{volume_node.GetName()} CSA":
        series.SetName(name)  # named as the table by an earlier release (a name of the user's stays)
    series.SetAndObserveTableNodeID(table_node.GetID())
    series.SetXColumnName(CSA_X_COLUMN)
    series.SetYColumnName(CSA_Y_COLUMN)
    series.SetPlotType(series.PlotTypeScatter)
    series.SetMarkerStyle(series.MarkerStyleCircle)
    series.SetColor(*INFERNO_ANCHORS[5])

    chart = _output_node(volume_node, "csa_chart", "vtkMRMLPlotChartNode", f"{volume_node.GetName()} CSA along the cord")
    chart.RemoveAllPlotSeriesNodeIDs()
    chart.AddAndObservePlotSeriesNodeID(series.GetID())
    chart.SetTitle(f"Cord cross-sectional area: {volume_node.GetName()}")
    chart.SetXAxisTitle("position along the cord, z (mm)")
    chart.SetYAxisTitle("CSA (mm\u00b2)")
    chart.SetLegendVisibility(False)
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLPlotViewNode")):
        scene.GetNthNodeByClass(index, "vtkMRMLPlotViewNode").SetPlotChartNodeID(chart.GetID())
    for node in (series, chart):  # renamed or restyled by the user, they are left alone by the next run
        node.SetAttribute(WRITTEN_ATTRIBUTE, _written_digest(node))
    return chart


# --- vertebral levels --------------------------------------------------------------------------------------
AUTOMATIC_LEVELS = "auto"


def _update_disc_points(volume_node, discs):
    """The markups node of the discs found automatically, one control point per disc named like "C2/C3" (the
    discs in view and the next one beyond each end, as the template places it). A re-run replaces the points,
    unless the user moved or renamed them since: that node is left alone and a new one made."""
    import vtk

    from .vertebrae import disc_name

    node = _output_node(volume_node, "discs", "vtkMRMLMarkupsFiducialNode", f"{volume_node.GetName()} discs")
    node.RemoveAllControlPoints()
    for number in sorted(discs):
        node.AddControlPointWorld(vtk.vtkVector3d(*[float(value) for value in discs[number]]), disc_name(number))
    node.SetAttribute(WRITTEN_ATTRIBUTE, _written_digest(node))
    return node


def remeasure_levels(volume_node, disc_points, *, threshold: float = 0.5, opacity: float = 0.6):
    """The CSA table and the per-level table measured again with disc points (the automatic ones moved by the
    user, or any markups named like "C2/C3"), from the probability volume of the last run: the network does
    not run again. Returns the outputs as segment_volume_node does."""
    if disc_points is None:
        raise InputError(f"'{volume_node.GetName()}' has no disc points: run it with automatic vertebral levels first")
    probability_node = find_output(volume_node, "probability")
    if probability_node is None or probability_node.GetImageData() is None:
        raise InputError(f"'{volume_node.GetName()}' has no cord probability from an earlier run: run the segmentation first")
    import slicer

    probability = np.array(slicer.util.arrayFromVolume(probability_node).transpose(2, 1, 0), dtype=np.float32)
    return segment_volume_node(volume_node, probability=probability, levels=disc_points, threshold=threshold,
                               opacity=opacity, segmenter=_no_network)


def _no_network(*args, **kwargs):
    raise AssertionError("remeasure_levels must not run the network")


def level_inputs(levels, volume_node):
    """(level codes in the input's voxel grid, None) from a label volume, or (None, {disc number: world position})
    from a markups point list of discs (checked before the model runs: a wrong levels input must not cost the
    user the segmentation)."""
    if isinstance(levels, str):  # "auto": the discs are found after the segmentation
        if levels != AUTOMATIC_LEVELS:
            raise InputError(f"levels must be a label volume, a markups point list of discs or '{AUTOMATIC_LEVELS}', not {levels!r}")
        return None, None
    if levels.IsA("vtkMRMLVolumeNode"):
        return _resampled_labels(levels, volume_node, tuple(volume_node.GetImageData().GetDimensions())), None
    if levels.IsA("vtkMRMLMarkupsNode"):
        from .discs import disc_points_from_names

        _level_affine(volume_node)  # the discs are compared with the cord where the views show it
        discs = disc_points_from_names(_disc_points(levels))
        if len(discs) < 2:
            raise InputError("at least two disc points (for example C2/C3 and C3/C4) are needed to define levels")
        return None, discs
    raise InputError(f"levels '{levels.GetName()}' must be a label volume or a markups point list of discs")


def _resampled_labels(label_node, volume_node, shape):
    """Nearest-neighbour resampling of a label volume into the input's grid (identity when they match)."""
    import scipy.ndimage

    labels, label_affine = _any_volume_array_and_affine(label_node)
    affine = _level_affine(volume_node)
    if labels.shape == tuple(shape) and np.allclose(label_affine, affine, atol=1e-4):
        return labels.astype(np.int32)
    voxel_to_label_voxel = np.linalg.inv(label_affine) @ affine
    return scipy.ndimage.affine_transform(
        labels.astype(np.int32), voxel_to_label_voxel, output_shape=tuple(shape), order=0, mode="constant", cval=0
    )


def _any_volume_array_and_affine(node):
    import slicer
    import vtk

    if node.GetImageData() is None:
        raise InputError(f"volume '{node.GetName()}' has no image data")
    return np.array(slicer.util.arrayFromVolume(node).transpose(2, 1, 0)), _level_affine(node)


def _level_affine(node):
    """world_affine, refusing a non-linear transform: levels are compared where the views show them."""
    transform = node.GetParentTransformNode()
    if transform is not None and not transform.IsTransformToWorldLinear():
        raise InputError(f"'{node.GetName()}' is under a non-linear transform: harden it (Data module) to use "
                         "vertebral levels")
    return world_affine(node)


def _disc_points(markups_node):
    """{disc name: RAS position} from the placed control points, named like "C2/C3" (or "C2-C3")."""
    points = {}
    for index in range(markups_node.GetNumberOfControlPoints()):
        if markups_node.GetNthControlPointPositionStatus(index) != markups_node.PositionDefined:
            continue  # an unplaced (or being placed) point has no position yet
        label = markups_node.GetNthControlPointLabel(index).strip().upper().replace("-", "/")
        if label in points:
            raise InputError(f"disc point '{label}' is placed twice in '{markups_node.GetName()}': keep one")
        position = [0.0, 0.0, 0.0]
        markups_node.GetNthControlPointPositionWorld(index, position)
        points[label] = np.array(position)
    return points


# --- subject hierarchy -------------------------------------------------------------------------------------


def _place_in_subject_hierarchy(scene, volume_node):
    """Put every output in the input's study (or wherever the input sits) in the subject hierarchy."""
    hierarchy = scene.GetSubjectHierarchyNode()
    input_item = hierarchy.GetItemByDataNode(volume_node)
    if not input_item:
        return
    parent = hierarchy.GetItemParent(input_item)
    for role in ("probability", "segmentation", "csa", "csa_levels", "csa_chart", "csa_series"):
        node = find_output(volume_node, role)
        if node is None:
            continue
        item = hierarchy.GetItemByDataNode(node)
        if item:
            hierarchy.SetItemParent(item, parent)
        else:
            hierarchy.CreateItem(parent, node)


# --- headless scene ----------------------------------------------------------------------------------------


class HeadlessSlicer:
    """An MRML scene with the application and module logics that Slicer's GUI would register.

    For tests and scripts outside Slicer (slicer-core wheel); inside Slicer use `slicer.mrmlScene`.
    Use it as a context manager (or call `close`) so the logics are torn down in a safe order.
    """

    def __init__(self, cache_directory: str):
        import slicer

        self.scene = slicer.vtkMRMLScene()
        cache = slicer.vtkCacheManager()
        cache.SetRemoteCacheDirectory(cache_directory)
        self.scene.SetCacheManager(cache)
        data_io = slicer.vtkDataIOManager()  # needed to read .mrb bundles
        data_io.SetCacheManager(cache)
        self.scene.SetDataIOManager(data_io)

        self.app_logic = slicer.vtkSlicerApplicationLogic()
        self.app_logic.SetMRMLScene(self.scene)
        color_logic = self.app_logic.GetColorLogic()
        color_logic.SetMRMLScene(self.scene)
        color_logic.AddDefaultColorNodes()
        self.logics = {"Colors": color_logic}
        self.app_logic.SetModuleLogic("Colors", color_logic)
        for name, logic_class in (
            ("Volumes", slicer.vtkSlicerVolumesLogic),
            ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic),
            ("Tables", slicer.vtkSlicerTablesLogic),
            ("Plots", slicer.vtkSlicerPlotsLogic),
            ("Markups", slicer.vtkSlicerMarkupsLogic),
        ):
            logic = logic_class()
            logic.SetMRMLApplicationLogic(self.app_logic)
            logic.SetMRMLScene(self.scene)
            self.app_logic.SetModuleLogic(name, logic)
            self.logics[name] = logic
        self.slice_logics = {}

    def close(self):
        """Detach the logics from the scene, views first: VTK would otherwise free them in any order and a
        logic could call back into one already freed (a crash when the color logic removes its nodes)."""
        if self.scene is None:
            return
        for logic in list(self.slice_logics.values()) + list(self.logics.values()):
            logic.SetMRMLScene(None)
        self.slice_logics.clear()
        self.logics.clear()
        self.app_logic.SetMRMLScene(None)
        self.scene.Clear(True)
        self.scene = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __del__(self):
        self.close()

    def load_volume(self, path: str, name: Optional[str] = None, labelmap: bool = False):
        """Load an image file as a volume node (ITK reader, exactly as Slicer's Add Data does)."""
        from pathlib import Path

        name = name or Path(path).name.split(".")[0]
        node = self.logics["Volumes"].AddArchetypeVolume(str(path), name, 1 if labelmap else 0)
        if node is None:
            raise InputError(f"could not load '{path}' as a volume")
        return node

    def add_slice_view(self, name: str = "Red", orientation: str = "Axial", size=(512, 512)):
        """A slice view without a render window: its logic composites the layers into an RGBA image."""
        import slicer

        logic = slicer.vtkMRMLSliceLogic()
        logic.SetMRMLApplicationLogic(self.app_logic)
        logic.SetMRMLScene(self.scene)
        slice_node = logic.AddSliceNode(name)
        slice_node.SetOrientation(orientation)
        slice_node.SetDimensions(size[0], size[1], 1)
        self.slice_logics[name] = logic
        return logic

    def render_slice(self, name: str = "Red") -> np.ndarray:
        """RGBA uint8 image (rows top to bottom) of what the named slice view shows."""
        from vtk.util.numpy_support import vtk_to_numpy

        blend = self.slice_logics[name].GetBlend()
        blend.Update()
        image = blend.GetOutput()
        width, height, _ = image.GetDimensions()
        pixels = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, -1)
        return pixels[::-1].copy()
