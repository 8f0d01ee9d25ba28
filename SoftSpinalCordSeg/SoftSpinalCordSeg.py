"""Soft Spinal Cord Segmentation: thin Slicer glue over the Slicer-free SoftSpinalCordSegLib.

Module (metadata, sample data), parameter node, Widget (GUI only), Logic (dependencies, running the model
in a worker process, showing results) and Test. The work itself is `SoftSpinalCordSegLib.mrml.segment_volume_node`.
"""

import contextlib
import os
from typing import Annotated, Optional, Union

import qt
import slicer
import vtk
from slicer import vtkMRMLLabelMapVolumeNode, vtkMRMLMarkupsFiducialNode, vtkMRMLScalarVolumeNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin
from SoftSpinalCordSegLib.morphometry import OVERSIZED_CSA_MM2, STEEP_ANGLE_DEG
from SoftSpinalCordSegLib.selftest import SelfTestMixin, torch_missing_reason

DEVICES = ["auto", "cpu", "cuda"]
SAMPLE_NAME = "SpinalCordT2w"
# T2-weighted axial cervical MRI of an MS patient from the SCT course data (MIT licence), pinned to a commit.
SAMPLE_URL = (
    "https://github.com/spinalcordtoolbox/sct_tutorial_data/raw/"
    "31eac550558ea933348bffc27f349e30c41c687b/single_subject/data/t2_ms/t2.nii.gz"
)
SAMPLE_SHA256 = "5b25b71646e363cf0c24415db0eb0d836f0deb4ae0b024d1b939d505ab63783b"


class SoftSpinalCordSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Soft Spinal Cord Segmentation")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]  # Slicer's own category
        self.parent.dependencies = []
        self.parent.contributors = ["SoftSpinalCordSeg developers (SoftSpinalCordSeg project)"]
        self.parent.helpText = _(
            "Contrast-agnostic soft (probabilistic) spinal cord segmentation and angle-corrected cross-sectional "
            "area (CSA) per slice, identical to the <code>softseg</code> command line. "
            "See the <a href='https://github.com/softspinalcordseg/SlicerSoftSpinalCordSeg'>documentation</a>."
        )
        self.parent.acknowledgementText = _(
            "CSA follows the Spinal Cord Toolbox (De Leener et al., NeuroImage 2017); soft segmentation after "
            "Bedard et al., 'Towards contrast-agnostic soft segmentation of the spinal cord' (2023)."
        )
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """Add the sample spinal-cord MRI to the Sample Data module (downloaded on first use, checked by SHA-256)."""
    import SampleData

    iconsPath = os.path.join(os.path.dirname(__file__), "Resources", "Icons")
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="Spinal cord",
        sampleName=SAMPLE_NAME,
        thumbnailFileName=os.path.join(iconsPath, "SpinalCordT2w.png"),
        uris=SAMPLE_URL,
        fileNames="SpinalCordT2w.nii.gz",
        checksums=f"SHA256:{SAMPLE_SHA256}",
        nodeNames=SAMPLE_NAME,
    )


@parameterNodeWrapper
class SoftSpinalCordSegParameterNode:
    """Settings saved with the scene; each is bound to the widget named in the .ui (SlicerParameterName)."""

    inputVolume: vtkMRMLScalarVolumeNode
    levels: Optional[Union[vtkMRMLLabelMapVolumeNode, vtkMRMLMarkupsFiducialNode]] = None
    automaticLevels: bool = False
    device: Annotated[str, Choice(DEVICES)] = "auto"
    threshold: Annotated[float, WithinRange(0.05, 0.95)] = 0.5
    opacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.6
    bothPolarities: bool = True


class SoftSpinalCordSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self.worker = None  # the running WorkerProcess, if any
        self.runningVolume = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SoftSpinalCordSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SoftSpinalCordSegLogic()
        self.ui.progressBar.hide()
        self.pollTimer = qt.QTimer()
        self.pollTimer.setInterval(200)
        self.pollTimer.connect("timeout()", self.onPollWorker)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.NodeRemovedEvent, self.onNodeRemoved)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.exportCsvButton.connect("clicked(bool)", self.onExportCsv)
        self.ui.exportPngButton.connect("clicked(bool)", self.onExportPng)
        self.ui.remeasureLevelsButton.connect("clicked(bool)", self.onRemeasureLevels)
        self.ui.csaTableView.connect("clicked(QModelIndex)", self.onTableRowClicked)
        self.initializeParameterNode()

    def cleanup(self):
        self.cancel()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)

    def onSceneStartClose(self, caller, event):
        self.cancel()
        self.setParameterNode(None)

    @vtk.calldata_type(vtk.VTK_OBJECT)
    def onNodeRemoved(self, caller, event, node):
        """The input removed while the model runs: stop now rather than fail when it ends."""
        if self.worker and node is self.runningVolume:
            self.cancel()
            self.ui.statusLabel.text = _("Cancelled: the input volume was removed from the scene.")
            self.onParameterNodeModified()

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            volumes = slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")  # and its subclasses:
            self._parameterNode.inputVolume = next(  # only grey-level volumes, as the selector offers
                (volume for volume in volumes if volume.GetClassName() == "vtkMRMLScalarVolumeNode"), None)

    def setParameterNode(self, inputParameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
            self.onParameterNodeModified()

    def onParameterNodeModified(self, caller=None, event=None):
        """Enable Apply when there is an input, and show that input's earlier results (at the chosen opacity)."""
        from SoftSpinalCordSegLib.mrml import find_output, set_overlay_opacity

        volume = self._parameterNode.inputVolume if self._parameterNode else None
        if not self.worker:
            self.ui.applyButton.enabled = volume is not None
        if volume:
            set_overlay_opacity(volume, self._parameterNode.opacity)
        table = find_output(volume, "csa") if volume else None
        self.ui.csaTableView.setMRMLTableNode(table)
        levels = find_output(volume, "csa_levels") if volume else None
        self.ui.levelTableView.setMRMLTableNode(levels)
        self.ui.levelTableView.visible = levels is not None
        self.ui.exportPngButton.enabled = self.ui.exportCsvButton.enabled = table is not None
        self.ui.remeasureLevelsButton.enabled = bool(volume) and not self.worker and find_output(volume, "discs") is not None

    # --- running ---------------------------------------------------------------------------------------------

    def onApplyButton(self):
        if self.worker:  # the button reads Cancel while running
            self.cancel()
            self.ui.statusLabel.text = _("Cancelled: the scene is unchanged.")
            return
        with slicer.util.tryWithErrorDisplay(_("Could not install the Python packages the module needs.")):
            if not self.logic.ensureDependencies():  # its dialogs need the normal cursor
                return
        with slicer.util.tryWithErrorDisplay(_("Could not start the segmentation."), waitCursor=True):
            self.runningVolume = self._parameterNode.inputVolume
            self.worker = self.logic.startProcessing(
                self.runningVolume, device=self._parameterNode.device, levels=self.chosenLevels(),
                bothPolarities=self._parameterNode.bothPolarities)
            self.setRunning(True)

    def onPollWorker(self):
        for event in self.worker.poll():
            if event.kind == "PROGRESS":
                self.ui.progressBar.value = int(round(100 * event.fraction))
                self.ui.statusLabel.text = event.message
            elif event.kind == "DEVICE":
                self.ui.deviceNoteLabel.text = self.worker.device_note
        if self.worker.running:
            return
        worker, self.worker = self.worker, None
        self.setRunning(False)
        parameters = self._parameterNode
        with self.reportingFailure(_("Segmentation failed: nothing was added to the scene."), _("Segmentation failed.")):
            outputs = self.logic.finishProcessing(
                worker, self.runningVolume, threshold=parameters.threshold, opacity=parameters.opacity,
                levels=self.chosenLevels())
            self.ui.statusLabel.text = self.doneMessage(outputs)

    def chosenLevels(self):
        """"auto" when automatic levels are ticked, else the levels input (None, a label volume or disc points)."""
        from SoftSpinalCordSegLib.mrml import AUTOMATIC_LEVELS

        return AUTOMATIC_LEVELS if self._parameterNode.automaticLevels else self._parameterNode.levels

    def onRemeasureLevels(self):
        """The levels measured again from the (moved) automatic disc points, without the model."""
        parameters = self._parameterNode
        failed = _("Could not re-measure the levels.")
        with self.reportingFailure(failed, failed):
            outputs = self.logic.remeasureLevels(parameters.inputVolume, threshold=parameters.threshold,
                                                 opacity=parameters.opacity)
            self.ui.statusLabel.text = self.doneMessage(outputs)

    @contextlib.contextmanager
    def reportingFailure(self, status, title):
        """The block under tryWithErrorDisplay(title), the status reading `status` until the block sets its own;
        the buttons are refreshed either way (tryWithErrorDisplay shows the error, then raises it again)."""
        self.ui.statusLabel.text = status
        try:
            with slicer.util.tryWithErrorDisplay(title, waitCursor=True):
                yield
        finally:
            self.onParameterNodeModified()

    @staticmethod
    def doneMessage(outputs):
        """Slices measured, those whose CSA stands out from their neighbours' or is over a healthy cord's
        (misread more often than real) or that the cord crosses steeply, and why levels given made no per-level table."""
        message = _("Done: {rows} slices measured.").format(rows=len(outputs.csa.rows))
        suspects = outputs.csa.suspect_slices()
        if suspects:
            message += " " + _("Check slices {slices} in the slice views: their CSA departs from their neighbours'.").format(
                slices=", ".join(str(index) for index in suspects))
        oversized = outputs.csa.oversized_slices()
        if oversized:
            message += " " + _("Check slices {slices} in the slice views: their CSA is over {limit:g} mm², more than a "
                               "healthy adult cord's.").format(slices=", ".join(str(index) for index in oversized),
                                                               limit=OVERSIZED_CSA_MM2)
        steep = outputs.csa.steep_slices()
        if steep:
            message += " " + _("Check slices {slices}: the cord crosses them at over {limit:g} degrees, where a "
                               "slice-by-slice segmentation is unreliable.").format(
                slices=", ".join(str(index) for index in steep), limit=STEEP_ANGLE_DEG)
        if outputs.disc_points is not None:
            message += " " + _("Discs found: check the points of '{name}' in the slice views, move any that is off, "
                               "then Re-measure levels.").format(name=outputs.disc_points.GetName())
        for note in (outputs.confidence_note, outputs.level_note):
            if note:
                message += " " + note[0].upper() + note[1:] + "."
        return message

    def cancel(self):
        if self.worker:
            self.worker.cancel()
            self.worker = None
            self.setRunning(False)

    def setRunning(self, running):
        self.ui.applyButton.text = _("Cancel") if running else _("Apply")
        self.ui.progressBar.visible = running
        self.ui.progressBar.value = 0
        self.ui.inputsCollapsibleButton.enabled = self.ui.optionsCollapsibleButton.enabled = not running
        if running:
            self.ui.statusLabel.text = _("Starting the model...")
            self.ui.deviceNoteLabel.text = ""
            self.pollTimer.start()
        else:
            self.pollTimer.stop()

    # --- results ---------------------------------------------------------------------------------------------

    def onTableRowClicked(self, index):
        """Move the slice views to the cord centre of the clicked slice."""
        table = self.ui.csaTableView.mrmlTableNode()
        if table:
            position = [float(table.GetCellText(index.row(), table.GetColumnIndex(name))) for name in ("x_mm", "y_mm", "z_mm")]
            slicer.modules.markups.logic().JumpSlicesToLocation(*position, True)

    def onExportCsv(self):
        path = qt.QFileDialog.getSaveFileName(None, _("Export CSA table"), "csa.csv", "CSV (*.csv)")
        if path:
            with slicer.util.tryWithErrorDisplay(_("Could not export the table."), waitCursor=True):
                from SoftSpinalCordSegLib.mrml import csa_table_of

                # the shown table (also one reloaded with a scene), written as `softseg csa` writes; `slice` is
                # the node's K index, which Slicer flips for left-handed files: match rows on z_mm
                csa_table_of(self.ui.csaTableView.mrmlTableNode()).write_csv(path)

    def onExportPng(self):
        path = qt.QFileDialog.getSaveFileName(None, _("Export CSA plot"), "csa.png", "PNG (*.png)")
        if path:
            with slicer.util.tryWithErrorDisplay(_("Could not export the plot."), waitCursor=True):
                self.logic.exportPlotPng(path)


class SoftSpinalCordSegLogic(ScriptedLoadableModuleLogic):
    """Slicer-side logic: dependencies, the worker process, showing results. The work is in SoftSpinalCordSegLib."""

    def getParameterNode(self):
        return SoftSpinalCordSegParameterNode(super().getParameterNode())

    def process(self, inputVolume, threshold=0.5, opacity=0.6, device="auto", levels=None, showResults=True,
                bothPolarities=True):
        """Blocking run in Slicer's own process (Python console, scripts, tests); returns the output nodes."""
        from SoftSpinalCordSegLib.mrml import segment_volume_node

        outputs = segment_volume_node(inputVolume, threshold=threshold, opacity=opacity, device=device, levels=levels,
                                      both_polarities=bothPolarities)
        if showResults:
            self.showResults(outputs)
        return outputs

    def startProcessing(self, inputVolume, device="auto", levels=None, bothPolarities=True):
        """Start the model in a separate process (PythonSlicer); poll the returned worker, cancel to kill it.
        The levels are checked first: a wrong levels input fails before the model runs, not after."""
        from SoftSpinalCordSegLib.mrml import level_inputs, volume_array_and_affine
        from SoftSpinalCordSegLib.worker import WorkerProcess, python_slicer

        image, affine = volume_array_and_affine(inputVolume)
        if levels is not None:
            level_inputs(levels, inputVolume)
        return WorkerProcess(image, affine, device=device, both_polarities=bothPolarities,
                             python=python_slicer(slicer.app.slicerHome))

    def finishProcessing(self, worker, inputVolume, **options):
        """Build the output nodes from a finished worker's probability."""
        from SoftSpinalCordSegLib.mrml import segment_volume_node

        outputs = segment_volume_node(inputVolume, probability=worker.result(), **options)
        self.showResults(outputs)
        return outputs

    def remeasureLevels(self, inputVolume, threshold=0.5, opacity=0.6):
        """The CSA and per-level tables measured again from the input's automatic disc points (as the user left
        them) and the probability of the last run: the model does not run again."""
        from SoftSpinalCordSegLib.mrml import find_output, remeasure_levels

        return remeasure_levels(inputVolume, find_output(inputVolume, "discs"), threshold=threshold, opacity=opacity)

    def showResults(self, outputs):
        """Slice views with the overlay, a plot view with the CSA chart, the cord surface in 3D."""
        slicer.app.layoutManager().setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpPlotView)
        slicer.modules.plots.logic().ShowChartInLayout(outputs.csa_chart)

    def exportPlotPng(self, path):
        plotWidget = slicer.app.layoutManager().plotWidget(0)
        if not plotWidget or not plotWidget.plotView().grab().save(path):
            raise OSError(_("Could not write {path}").format(path=path))

    # --- dependencies ----------------------------------------------------------------------------------------

    def ensureDependencies(self, askConfirmation=True):
        """Install what is missing, asking once: torch through the PyTorch extension, the rest with pip, which
        never touches torch nor Slicer's numpy, SimpleITK and vtk (SoftSpinalCordSegLib.dependencies). Offers a
        restart when a package already imported was replaced. True when everything is ready."""
        from SoftSpinalCordSegLib import dependencies

        plan = dependencies.make_plan()
        if not plan.needed:
            return True
        if plan.torch:
            try:
                import PyTorchUtils
            except ImportError:
                raise RuntimeError(_("This module needs the PyTorch extension: install 'PyTorch' from the Extensions Manager and restart Slicer."))
        if askConfirmation and not slicer.util.confirmOkCancelDisplay(
            _("Soft Spinal Cord Segmentation needs these Python packages, which will be downloaded and installed now "
              "(this can take several minutes):\n\n{packages}").format(packages="\n".join(plan.listed()))
        ):
            return False

        def installTorch(requirement):
            PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False, torchVersionRequirement=requirement)

        with slicer.util.WaitCursor():
            replaced = dependencies.install(plan, slicer.util.pip_install, installTorch)
        if replaced or dependencies.make_plan().needed:
            if slicer.util.confirmYesNoDisplay(
                _("Installed. Slicer must restart to use the new versions of {packages}. Restart now?").format(
                    packages=", ".join(replaced) or _("the installed packages"))
            ):
                slicer.util.restart()
            return False
        return True


class SoftSpinalCordSegTest(SelfTestMixin, ScriptedLoadableModuleTest):
    """Reload and Test, and ctest: segments a small generated volume in the worker process (SelfTestMixin, which
    Testing/test_selftest.py also runs headless); skips with a message where PyTorch is not installed."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        reason = torch_missing_reason()
        if reason:  # Reload and Test calls this directly: a SkipTest there would read "Reload and Test failed"
            self.delayDisplay(reason)
            return
        self.test_WorkerProcess()

    def selfTestScene(self):
        return slicer.mrmlScene

    def workerPython(self):
        from SoftSpinalCordSegLib.worker import python_slicer

        return python_slicer(slicer.app.slicerHome)
