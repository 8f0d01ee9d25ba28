"""The module's self-test: the worker-process path on a small generated image, shared by Slicer's
ScriptedLoadableModuleTest (Reload and Test, ctest) and the headless tests (Testing/test_selftest.py).

`SelfTestMixin` goes before a `unittest.TestCase`; the host supplies `selfTestScene()` (the MRML scene) and
`workerPython()` (PythonSlicer in Slicer). Without torch the test skips with a message saying why, as on
Slicer's extension build machines.
"""

from __future__ import annotations

import importlib.util
import time

import numpy as np

TORCH_MISSING = ("PyTorch is not installed, so the model cannot run: skipped. Install it from the PyTorch Utils "
                 "module (or press Apply once in Soft Spinal Cord Segmentation) and run the test again.")


def torch_missing_reason() -> str:
    """Why the self-test cannot run ('' when torch is there); looks torch up without importing it."""
    try:
        found = importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        found = False
    return "" if found else TORCH_MISSING


def add_generated_volume(scene, name: str = "SoftSpinalCordSegSelfTest"):
    """A small T2w-like axial volume (48 x 48 x 8 voxels) with a cord of known area (80 mm²) at its centre."""
    import slicer
    import vtk

    from .phantom import CordPhantom, mri_like_image

    shape, spacing = (48, 48, 8), np.array([0.8, 0.8, 2.0])
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = -spacing * (np.array(shape) - 1) / 2  # the cord's centreline through the middle
    image, _ = mri_like_image(CordPhantom(area_mm2=80.0, length_mm=40.0), shape, affine)
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    matrix = vtk.vtkMatrix4x4()
    for row in range(4):
        for column in range(4):
            matrix.SetElement(row, column, affine[row, column])
    volume.SetIJKToRASMatrix(matrix)
    slicer.util.updateVolumeFromArray(volume, np.ascontiguousarray(image.transpose(2, 1, 0)))
    volume.CreateDefaultDisplayNodes()
    return volume


class SelfTestMixin:
    """The self-test body; see the module docstring for what the host class supplies."""

    def selfTestScene(self):
        raise NotImplementedError

    def workerPython(self) -> str:
        raise NotImplementedError

    def test_WorkerProcess(self):
        """Segment a generated volume in the worker process, as Apply does, and check the scene outputs."""
        reason = torch_missing_reason()
        if reason:
            self.skipTest(reason)
        import slicer

        from .mrml import segment_volume_node, volume_array_and_affine
        from .worker import WorkerProcess

        scene = self.selfTestScene()
        volume = add_generated_volume(scene)
        before = slicer.util.arrayFromVolume(volume).copy()
        self.delayDisplay("Generated a small volume; starting the worker process")
        image, affine = volume_array_and_affine(volume)
        worker = WorkerProcess(image, affine, device="cpu", python=self.workerPython())
        fractions = []
        deadline = time.time() + 300
        while worker.running and time.time() < deadline:
            fractions += [event.fraction for event in worker.poll() if event.kind == "PROGRESS"]
            time.sleep(0.1)
        if worker.running:
            worker.cancel()
            self.fail("the worker process did not finish within 5 minutes")
        fractions += [event.fraction for event in worker.poll() if event.kind == "PROGRESS"]  # sent as it ended
        outputs = segment_volume_node(volume, probability=worker.result())
        self.assertTrue(fractions and fractions == sorted(fractions), f"progress {fractions}")
        self.assertEqual(worker.device, "cpu")

        probability = slicer.util.arrayFromVolume(outputs.probability_volume)
        self.assertEqual(probability.shape, before.shape)
        self.assertGreaterEqual(float(probability.min()), 0.0)
        self.assertLessEqual(float(probability.max()), 1.0)
        self.assertTrue(np.array_equal(slicer.util.arrayFromVolume(volume), before), "the input was modified")
        self.assertEqual(outputs.segmentation.GetSegmentation().GetNumberOfSegments(), 1)
        self.assertEqual(outputs.csa_table.GetNumberOfRows(), before.shape[0])  # one row per axial slice
        median = float(np.nanmedian(outputs.csa.column("csa_mm2")))
        self.assertTrue(60.0 < median < 100.0, f"median CSA {median:.1f} mm², the generated cord has 80")
        nodes = scene.GetNumberOfNodes()
        segment_volume_node(volume, probability=worker.result())  # a re-run updates the same nodes
        self.assertEqual(scene.GetNumberOfNodes(), nodes)
        self.delayDisplay("Self-test passed")
