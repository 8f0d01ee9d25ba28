"""The module's self-test (SoftSpinalCordSegLib.selftest, run by Slicer's ScriptedLoadableModuleTest) run
headless: a real MRML scene (slicer-core), the worker started with this Python in place of PythonSlicer."""

from __future__ import annotations

import sys
import unittest

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core (real MRML) is not installed")

from SoftSpinalCordSegLib import mrml, selftest  # noqa: E402
from SoftSpinalCordSegLib.errors import InputError  # noqa: E402
from SoftSpinalCordSegLib.worker import python_slicer, worker_python  # noqa: E402


def run_self_test(cache_directory):
    """The self-test as Slicer's test runner runs it; (unittest result, the scene's node count after)."""
    with mrml.HeadlessSlicer(cache_directory) as app:

        class HeadlessSelfTest(selftest.SelfTestMixin, unittest.TestCase):
            messages = []

            def selfTestScene(self):
                return app.scene

            def workerPython(self):
                return sys.executable

            def delayDisplay(self, message):
                self.messages.append(message)

        result = unittest.TextTestRunner(stream=open("/dev/null", "w")).run(HeadlessSelfTest("test_WorkerProcess"))
        return result, HeadlessSelfTest.messages


def test_self_test_skips_with_a_clear_message_without_torch(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # what `import torch` sees where torch is not installed
    result, messages = run_self_test(str(tmp_path))
    assert result.wasSuccessful() and len(result.skipped) == 1 and result.testsRun == 1
    assert result.skipped[0][1] == selftest.TORCH_MISSING and "PyTorch is not installed" in selftest.TORCH_MISSING
    assert messages == []


def test_self_test_runs_the_worker_process_with_torch(tmp_path):
    pytest.importorskip("torch")
    result, messages = run_self_test(str(tmp_path))
    assert not result.skipped, result.skipped
    assert result.wasSuccessful(), result.failures + result.errors
    assert messages[-1] == "Self-test passed"


def test_generated_volume_has_the_grid_and_a_bright_csf_ring_around_a_darker_cord(tmp_path):
    with mrml.HeadlessSlicer(str(tmp_path)) as app:
        volume = selftest.add_generated_volume(app.scene)
        image, affine = mrml.volume_array_and_affine(volume)
    assert image.shape == (48, 48, 8)
    np.testing.assert_allclose(np.diag(affine), [0.8, 0.8, 2.0, 1.0])
    np.testing.assert_allclose(affine[:3, :3] @ (np.array(image.shape) - 1) / 2 + affine[:3, 3], 0.0, atol=1e-9)
    centre, csf = image[24, 24, 4], image[24, 24 + 7, 4]  # cord centre; 5.6 mm posterior: CSF
    assert csf > 1.5 * centre  # T2w: CSF bright around a darker cord


def test_the_worker_never_runs_an_application_in_place_of_python(tmp_path, monkeypatch):
    assert worker_python(None, executable="/usr/bin/python3.11") == "/usr/bin/python3.11"
    assert worker_python("/opt/Slicer/bin/PythonSlicer", executable="/opt/Slicer/bin/SlicerApp-real") == "/opt/Slicer/bin/PythonSlicer"
    for application in ("/opt/Slicer/bin/SlicerApp-real", "C:/Slicer 5.8.1/bin/SlicerApp-real.exe", "/Applications/Slicer.app/Contents/MacOS/Slicer"):
        with pytest.raises(InputError, match="application, not Python"):
            worker_python(None, executable=application)

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(InputError, match="PythonSlicer.*reinstall Slicer"):
        python_slicer(str(tmp_path))
    launcher = tmp_path / "bin" / "PythonSlicer"
    launcher.parent.mkdir()
    launcher.write_text("#!/bin/sh\n")
    assert python_slicer(str(tmp_path)) == str(launcher)  # not on the PATH: found in Slicer's bin folder
    launcher.chmod(0o755)
    monkeypatch.setenv("PATH", str(launcher.parent))
    assert python_slicer(None) == str(launcher)
