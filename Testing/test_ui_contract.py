"""Contract between the Qt Designer file and the module code (read with xml and ast: no Qt needed)."""

from __future__ import annotations

import ast
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

MODULE_DIR = Path(__file__).resolve().parents[1] / "SoftSpinalCordSeg"
UI_PATH = MODULE_DIR / "Resources" / "UI" / "SoftSpinalCordSeg.ui"
SOURCE_PATH = MODULE_DIR / "SoftSpinalCordSeg.py"

# Every widget the code touches, with the class the code relies on (a new use must be added here).
EXPECTED_WIDGETS = {
    "inputsCollapsibleButton": "ctkCollapsibleButton",
    "optionsCollapsibleButton": "ctkCollapsibleButton",
    "applyButton": "QPushButton",
    "progressBar": "QProgressBar",
    "statusLabel": "QLabel",
    "deviceNoteLabel": "QLabel",
    "csaTableView": "qMRMLTableView",
    "levelTableView": "qMRMLTableView",
    "exportCsvButton": "QPushButton",
    "exportPngButton": "QPushButton",
    "remeasureLevelsButton": "QPushButton",
}
QT_BUILTIN = {"QWidget", "QLabel", "QPushButton", "QComboBox", "QProgressBar", "QCheckBox", "QDoubleSpinBox", "QSpinBox"}


@pytest.fixture(scope="module")
def ui():
    return ElementTree.parse(UI_PATH).getroot()


@pytest.fixture(scope="module")
def source():
    return ast.parse(SOURCE_PATH.read_text())


def widget_classes(ui) -> dict:
    return {widget.get("name"): widget.get("class") for widget in ui.iter("widget")}


def parameter_bindings(ui) -> dict:
    """SlicerParameterName -> (widget name, widget class)."""
    bindings = {}
    for widget in ui.iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bindings[prop.findtext("string")] = (widget.get("name"), widget.get("class"))
    return bindings


def ui_names_used(tree) -> set:
    """X for every `self.ui.X` in the module source."""
    return {
        node.attr for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "ui"
        and isinstance(node.value.value, ast.Name) and node.value.value.id == "self"
    }


def parameters(tree) -> dict:
    """name -> annotation source of the parameterNodeWrapper class."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and any(
            isinstance(decorator, ast.Name) and decorator.id == "parameterNodeWrapper" for decorator in node.decorator_list
        ):
            return {item.target.id: ast.unparse(item.annotation) for item in node.body if isinstance(item, ast.AnnAssign)}
    raise AssertionError("no @parameterNodeWrapper class in the module")


def expected_widget_class(annotation: str) -> set:
    if "vtkMRML" in annotation:
        return {"qMRMLNodeComboBox"}
    if "Choice(" in annotation:
        return {"QComboBox"}
    if annotation.startswith("Annotated[float") or annotation == "float":
        return {"ctkSliderWidget", "ctkDoubleSpinBox", "QDoubleSpinBox"}
    if annotation == "bool":
        return {"QCheckBox"}
    raise AssertionError(f"no widget rule for parameter type {annotation}")


def test_every_widget_the_code_uses_exists_with_its_class(ui, source):
    used = ui_names_used(source)
    assert used == set(EXPECTED_WIDGETS), "update EXPECTED_WIDGETS with the widgets the code uses"
    classes = widget_classes(ui)
    for name, expected in EXPECTED_WIDGETS.items():
        assert classes.get(name) == expected, f"{name}: .ui has {classes.get(name)}, the code expects {expected}"


def test_every_parameter_is_bound_to_a_fitting_widget(ui, source):
    declared = parameters(source)
    bindings = parameter_bindings(ui)
    assert set(declared) == {"inputVolume", "levels", "automaticLevels", "device", "threshold", "opacity", "bothPolarities"}
    assert set(bindings) == set(declared), "every parameter has exactly one widget, and no widget names an unknown one"
    for name, annotation in declared.items():
        widget, widget_class = bindings[name]
        assert widget_class in expected_widget_class(annotation), f"{name} ({annotation}) is bound to {widget} ({widget_class})"


def test_node_selectors_offer_the_parameter_node_types(ui, source):
    declared = parameters(source)
    for widget in ui.iter("widget"):
        if widget.get("class") != "qMRMLNodeComboBox":
            continue
        parameter = next(p.findtext("string") for p in widget.findall("property") if p.get("name") == "SlicerParameterName")
        node_types = [s.text for p in widget.findall("property") if p.get("name") == "nodeTypes" for s in p.iter("string")]
        assert node_types and all(node_type in declared[parameter] for node_type in node_types), (parameter, node_types)


def test_ranges_in_the_ui_match_the_parameter_ranges(ui, source):
    declared = parameters(source)
    for parameter, (widget_name, _) in parameter_bindings(ui).items():
        if "WithinRange(" not in declared[parameter]:
            continue
        low, high = ast.literal_eval(declared[parameter].split("WithinRange(")[1].split(")")[0])
        widget = next(w for w in ui.iter("widget") if w.get("name") == widget_name)
        values = {p.get("name"): float(p.findtext("double")) for p in widget.findall("property") if p.find("double") is not None}
        assert (values["minimum"], values["maximum"]) == (low, high), parameter
        assert low <= values["value"] <= high


def test_custom_widgets_are_declared_and_connections_resolve(ui):
    classes = widget_classes(ui)
    declared = {custom.findtext("class") for custom in ui.iter("customwidget")}
    assert set(classes.values()) - QT_BUILTIN <= declared, "loadUI needs every custom widget class declared"
    for connection in ui.iter("connection"):
        assert connection.findtext("sender") in classes and connection.findtext("receiver") in classes
    node_widgets = {name for name, cls in classes.items() if cls.startswith("qMRML") and cls != "qMRMLWidget"}
    receivers = {c.findtext("receiver") for c in ui.iter("connection") if c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    assert node_widgets <= receivers, "every MRML widget must receive the scene"


def _under_wait_cursor(with_node: ast.With) -> bool:
    """A `with` that shows the wait cursor: tryWithErrorDisplay(..., waitCursor=True) or WaitCursor()."""
    for item in with_node.items:
        call = item.context_expr
        if isinstance(call, ast.Call):
            if ast.unparse(call.func).endswith("WaitCursor"):
                return True
            if any(k.arg == "waitCursor" and isinstance(k.value, ast.Constant) and k.value.value for k in call.keywords):
                return True
    return False


def test_dialogs_never_open_under_the_wait_cursor(source):
    """A confirmation (or the dependency installation, which asks) shown with the wait cursor looks hung."""
    dialogs = ("confirmOkCancelDisplay", "confirmYesNoDisplay", "ensureDependencies", "getSaveFileName")
    parents = {child: parent for parent in ast.walk(source) for child in ast.iter_child_nodes(parent)}
    found = 0
    for node in ast.walk(source):
        if isinstance(node, ast.Call) and ast.unparse(node.func).split(".")[-1] in dialogs:
            found += 1
            ancestor = parents.get(node)
            while ancestor is not None:
                assert not (isinstance(ancestor, ast.With) and _under_wait_cursor(ancestor)), (
                    f"line {node.lineno}: {ast.unparse(node.func)} runs under the wait cursor")
                ancestor = parents.get(ancestor)
    assert found >= 5  # Apply's dependency check, its two confirmations, the two export dialogs
