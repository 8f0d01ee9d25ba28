"""The Slicer API the module uses exists in every supported release (5.8.1 and 5.10.0), read from the API
inventories in ../shared/slicer-api by the AST checker in slicer_api.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import slicer_api

MODULE_DIR = Path(__file__).resolve().parents[1] / "SoftSpinalCordSeg"
LIBRARY_DIR = MODULE_DIR / "SoftSpinalCordSegLib"
NAMED_FILES = [MODULE_DIR / "SoftSpinalCordSeg.py"] + [LIBRARY_DIR / f"{name}.py" for name in ("mrml", "worker", "dependencies")]


def slicer_files():
    """The files the issue names, and every other library file that imports slicer."""
    importing = [path for path in sorted(LIBRARY_DIR.glob("*.py"))
                 if re.search(r"^\s*(import slicer|from slicer\b)", path.read_text(), flags=re.M)]
    return NAMED_FILES + [path for path in importing if path not in NAMED_FILES]


@pytest.fixture(params=slicer_api.VERSIONS)
def api(request):
    if not (slicer_api.API_DIR / f"slicer-{request.param}.json").is_file():
        pytest.skip(f"Slicer API inventory for {request.param} not found in {slicer_api.API_DIR}")
    pytest.importorskip("vtkmodules.all", reason="VTK (to check members inherited from VTK classes) is not installed")
    return slicer_api.load_api(request.param)


def test_module_and_library_use_only_api_every_supported_slicer_has(api):
    checked = []
    for path in slicer_files():
        problems, uses = slicer_api.check(path.read_text(), api)
        assert not problems, f"{path.name} on Slicer {api.version}:\n" + "\n".join(map(str, problems))
        checked += uses
    # the checker saw the calls that matter (a checker that finds nothing would pass too)
    for use in ("vtkSegment.SetTag", "vtkSegment.GetTerminologyEntryTagName", "vtkMRMLScene.AddNewNodeByClass",
                "slicer.util.pip_install", "slicer.util.restart", "slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE",
                "vtkMRMLPlotSeriesNode.PlotTypeScatter", "vtkSlicerPlotsLogic.ShowChartInLayout",
                "SampleData.SampleDataLogic.registerCustomSampleDataSource", "self.delayDisplay"):
        assert use in checked, use
    assert len(checked) > 250


BAD_SNIPPET = '''
import slicer

def label(node):
    segmentation = node.GetSegmentation()
    segmentation.GetSegment("cord").SetTerminology("x")
'''


def test_checker_catches_set_terminology_on_5_8_only(api):
    problems = slicer_api.find_problems(BAD_SNIPPET, api)
    if api.version.startswith("5.8"):
        assert [(p.line, p.use) for p in problems] == [(6, "vtkSegment.SetTerminology")]
    else:
        assert problems == []  # SetTerminology exists from 5.10


def test_checker_catches_missing_classes_functions_modules_and_snake_case(api):
    snippet = '''
import slicer
from slicer.util import noSuchHelper
from slicer.packaging import Requirement
node = slicer.vtkMRMLNoSuchNode()
scene = slicer.vtkMRMLScene()
volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
volume.name = "x"
volume.SetNoSuchThing(1)
anything.NoSlicerOrVtkClassHasThis()
slicer.util.arrayFromVolume(volume)
volume.GetImageData().GetDimensions()
volume.Modified()
'''
    problems = {(p.line, p.use) for p in slicer_api.find_problems(snippet, api)}
    assert problems == {
        (3, "slicer.util.noSuchHelper"), (4, "slicer.packaging.Requirement"), (5, "slicer.vtkMRMLNoSuchNode"),
        (8, "vtkMRMLScalarVolumeNode.name"), (9, "vtkMRMLScalarVolumeNode.SetNoSuchThing"),
        (10, "<object>.NoSlicerOrVtkClassHasThis"),
    }  # the last three lines are real: a slicer.util function, and methods VTK's own classes provide
