"""Check the Slicer API a Python file uses against the inventories of Slicer releases in ../shared/slicer-api.

The inventories (see their README) list, per release, every `vtk*` class Slicer defines with its methods,
constants and bases, and the functions and classes of `slicer.util`, `slicer.ScriptedLoadableModule`,
`slicer.i18n`, `slicer.parameterNodeWrapper` and `SampleData`. `find_problems(source, api)` reads a file's
AST and reports each use that the release lacks:

- module members: `slicer.util.X`, `from slicer.ScriptedLoadableModule import X`, `SampleData.C.m`, ...;
- Slicer classes and their members: `slicer.vtkX`, `slicer.vtkX.Member`, `slicer.mrmlScene.Member`;
- CamelCase members (VTK's naming) called or read on any other object. Where the object's class can be
  inferred (a constructor, `AddNewNodeByClass("vtkMRMLX")` or any call naming a class, `slicer.modules.x.logic()`,
  a getter `GetX()` when a class vtkX/vtkMRMLX/vtkSlicerX exists) the member must exist on that class, its bases
  or one of its subclasses (a getter may return a subclass); members reached through a VTK base are checked
  against the installed VTK. Otherwise the name must exist on some Slicer class of the release, or in VTK;
- snake_case attributes on an inferred Slicer class: VTK's Python properties need VTK 9.4 (Slicer 5.8 has 9.2);
- methods that a class of the file inherits from `ScriptedLoadableModule*` (or `unittest.TestCase`) or
  `VTKObservationMixin` and calls on `self` without defining them; also in a `*Mixin` class written for one.

Not covered (the inventories have none): Qt/PythonQt (`qt`, `slicer.app`, widgets), objects the application
creates at run time (`slicer.modules.*` except their logic), argument lists, and VTK methods that VTK 9.2
lacks but the installed VTK has.
"""

from __future__ import annotations

import ast
import importlib
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Set

API_DIR = Path(__file__).resolve().parents[2] / "shared" / "slicer-api"
VERSIONS = ("5.8.1", "5.10.0")
PYTHON_MODULES = ("slicer.util", "slicer.ScriptedLoadableModule", "slicer.i18n", "slicer.parameterNodeWrapper", "SampleData")
RUNTIME_ONLY = ("slicer.app", "slicer.modules", "slicer.moduleNames", "slicer.qSlicer", "slicer.qMRML")
SCRIPTED_BASES = ("ScriptedLoadableModule", "ScriptedLoadableModuleWidget", "ScriptedLoadableModuleLogic",
                  "ScriptedLoadableModuleTest", "VTKObservationMixin")


@dataclass(frozen=True)
class Problem:
    line: int
    use: str
    reason: str

    def __str__(self):
        return f"line {self.line}: {self.use}: {self.reason}"


def _entry_name(entry: str) -> str:
    """'@staticmethod C.m(a, b)' -> 'C.m'; 'loadUI(path)' -> 'loadUI'."""
    return re.match(r"(?:@\S+\s+)?([\w.]+)", entry).group(1)


@lru_cache(maxsize=None)
def vtk_member_names() -> Dict[str, Set[str]]:
    """{VTK class: its Python members} of the installed VTK (pure VTK: Slicer's classes are not in vtkmodules)."""
    import vtkmodules.all as vtk_all

    return {name: set(dir(getattr(vtk_all, name))) for name in dir(vtk_all) if name.startswith("vtk")}


class SlicerApi:
    """One release's inventory with member lookup through base classes."""

    def __init__(self, data: dict):
        self.version = data["version"]
        self.classes = {name: entry for name, entry in data["classes"].items() if not entry.get("wrap_excluded")}
        self.modules: Dict[str, Set[str]] = {}
        for module in PYTHON_MODULES:
            names = {_entry_name(entry) for entry in data["python_functions"].get(module, [])}
            for class_name, entry in data["python_classes"].get(module, {}).items():
                names.add(class_name)
                names.update(f"{class_name}.{attribute}" for attribute in entry.get("attributes", []))
            names.update(data["python_constants"].get(module, []))
            self.modules[module] = names
        self.all_members = set()
        for entry in self.classes.values():
            self.all_members.update(entry.get("methods", []), entry.get("constants", []))
        self.absent_modules = {module.split(".", 1)[-1] for module in data["python_modules_absent"]}
        self.decorator_members = {name for members in data["python_decorator_added_members"].values() for name in members}

    def members(self, class_name: str) -> Set[str]:
        """Methods and constants of a Slicer class and its Slicer bases."""
        entry = self.classes.get(class_name)
        if entry is None:
            return set()
        found = set(entry.get("methods", [])) | set(entry.get("constants", []))
        for base in entry["bases"]:
            found |= self.members(base)
        return found

    def external_bases(self, class_name: str) -> Set[str]:
        """The VTK classes a Slicer class's chain reaches."""
        entry = self.classes.get(class_name)
        if entry is None:
            return {class_name}
        found = set()
        for base in entry["bases"]:
            found |= self.external_bases(base)
        return found

    def subclasses(self, class_name: str) -> Set[str]:
        found = {name for name, entry in self.classes.items() if class_name in entry["bases"]}
        for name in list(found):
            found |= self.subclasses(name)
        return found

    def class_has(self, class_name: str, member: str) -> bool:
        if member in self.members(class_name) or any(member in self.members(sub) for sub in self.subclasses(class_name)):
            return True
        vtk = vtk_member_names()
        externals = self.external_bases(class_name)
        # a VTK base the installed VTK lacks: unknown, allowed
        return any(base not in vtk or member in vtk[base] for base in externals)

    def module_has(self, module: str, name: str) -> bool:
        return name in self.modules[module]


@lru_cache(maxsize=None)
def load_api(version: str) -> SlicerApi:
    return SlicerApi(json.loads((API_DIR / f"slicer-{version}.json").read_text()))


def _aliases(tree: ast.AST) -> Dict[str, str]:
    """Local name -> qualified name, from every import in the file (also those inside functions)."""
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                aliases[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return aliases


class _Checker(ast.NodeVisitor):
    def __init__(self, api: SlicerApi, aliases: Dict[str, str]):
        self.api = api
        self.aliases = aliases
        self.problems: List[Problem] = []
        self.checked: List[str] = []  # every use looked up, for the tests to see what was covered
        self.types: Dict[str, str] = {}  # variable -> inferred Slicer class, within the current function
        self.own_methods: Set[str] = set()
        self.scripted_class = False

    # --- naming -------------------------------------------------------------------------------------------

    def qualified(self, node) -> Optional[str]:
        if isinstance(node, ast.Name):
            return self.aliases.get(node.id)
        if isinstance(node, ast.Attribute):
            base = self.qualified(node.value)
            return f"{base}.{node.attr}" if base else None
        return None

    def class_of(self, node) -> Optional[str]:
        """The Slicer class of an expression's value, where it can be inferred."""
        if isinstance(node, ast.Name):
            return self.types.get(node.id)
        qualified = self.qualified(node)
        if qualified == "slicer.mrmlScene":
            return "vtkMRMLScene"
        if not isinstance(node, ast.Call):
            return None
        function = self.qualified(node.func)
        if function and function.startswith("slicer.vtk") and function.count(".") == 1:
            return function.split(".")[1]  # constructor
        if function and re.fullmatch(r"slicer\.modules\.\w+\.logic", function):
            module = function.split(".")[2].lower()
            return next((name for name in self.api.classes if name.lower() == f"vtkslicer{module}logic"), None)
        for argument in node.args:  # AddNewNodeByClass("vtkMRMLX", ...) and helpers like it
            if isinstance(argument, ast.Constant) and isinstance(argument.value, str) and argument.value in self.api.classes:
                return argument.value
        if isinstance(node.func, ast.Attribute):
            getter = re.fullmatch(r"Get(?:Nth)?(\w+)", node.func.attr)
            if getter:
                for prefix in ("vtk", "vtkMRML", "vtkSlicer"):
                    if prefix + getter.group(1) in self.api.classes:
                        return prefix + getter.group(1)
            if node.func.attr in ("New", "NewInstance", "SafeDownCast"):
                return self.class_of(node.func.value) or self.qualified(node.func.value) and self.qualified(node.func.value).split(".")[-1]
        return None

    # --- checks -------------------------------------------------------------------------------------------

    def report(self, node, use: str, ok: bool, reason: str):
        self.checked.append(use)
        if not ok:
            self.problems.append(Problem(node.lineno, use, f"{reason} in Slicer {self.api.version}"))

    def check_qualified(self, node, qualified: str) -> bool:
        """A slicer.* / SampleData.* name; True when it was handled (its parts need no further look)."""
        if qualified.startswith(RUNTIME_ONLY) or qualified in ("slicer", "SampleData", "slicer.mrmlScene"):
            return qualified != "slicer.mrmlScene"
        if qualified.startswith("slicer.mrmlScene."):
            member = qualified.split(".")[2]
            self.report(node, f"vtkMRMLScene.{member}", self.api.class_has("vtkMRMLScene", member), f"vtkMRMLScene has no {member}")
            return True
        for module in sorted(PYTHON_MODULES, key=len, reverse=True):
            if qualified.startswith(module + "."):
                rest = qualified[len(module) + 1:]
                self.report(node, qualified, self.api.module_has(module, rest), f"{module} has no {rest}")
                return True
        parts = qualified.split(".")
        if parts[0] == "slicer" and parts[1].startswith("vtk"):
            class_name = parts[1]
            if class_name not in self.api.classes:
                self.report(node, qualified, False, f"no class {class_name}")
            elif len(parts) > 2:
                self.report(node, qualified, self.api.class_has(class_name, parts[2]), f"{class_name} has no {parts[2]}")
            else:
                self.report(node, qualified, True, "")
            return True
        if parts[0] != "slicer":
            return True  # another module (numpy, vtk, os...): not Slicer's
        absent = parts[1] in self.api.absent_modules
        self.report(node, qualified, False, "no module slicer." + parts[1] if absent else
                    f"slicer.{parts[1]} is not in the inventory (name it in RUNTIME_ONLY if the application sets it)")
        return True

    def visit_Attribute(self, node):
        qualified = self.qualified(node)
        if qualified and "." in qualified:
            if self.check_qualified(node, qualified):
                return
        elif qualified is None:
            self.check_member(node)
        self.generic_visit(node)

    def check_member(self, node: ast.Attribute):
        receiver, member = node.value, node.attr
        if isinstance(receiver, ast.Name) and receiver.id == "self":
            if self.scripted_class and member not in self.own_methods and isinstance(getattr(node, "parent", None), ast.Call):
                self.check_inherited(node, member)
            return
        class_name = self.class_of(receiver)
        use = f"{class_name or '<object>'}.{member}"
        if class_name:
            if member[0].islower() and not member.startswith("_"):
                self.report(node, use, False, "snake_case VTK properties need VTK 9.4 (Slicer 5.8 ships 9.2)")
            else:
                self.report(node, use, self.api.class_has(class_name, member), f"{class_name} has no {member}")
        elif member[0].isupper():
            vtk = vtk_member_names()
            known = member in self.api.all_members or any(member in names for names in vtk.values())
            self.report(node, use, known, f"no Slicer (or VTK) class has {member}")

    def check_inherited(self, node, member: str):
        if member in self.api.decorator_members:
            return
        names = set().union(*(self.api.modules[module] for module in ("slicer.ScriptedLoadableModule", "slicer.util")))
        import unittest  # ScriptedLoadableModuleTest's base

        ok = any(f"{base}.{member}" in names for base in SCRIPTED_BASES) or hasattr(unittest.TestCase, member)
        self.report(node, f"self.{member}", ok, f"no ScriptedLoadableModule base class defines {member}")

    def visit_ImportFrom(self, node):
        if node.module and node.level == 0:
            for alias in node.names:
                self.check_qualified(node, f"{node.module}.{alias.name}")

    def visit_Call(self, node):
        node.func.parent = node
        self.generic_visit(node)

    def visit_Assign(self, node):
        self.generic_visit(node)
        inferred = self.class_of(node.value)
        for target in node.targets:
            if isinstance(target, ast.Name):
                if inferred:
                    self.types[target.id] = inferred
                else:
                    self.types.pop(target.id, None)

    def visit_FunctionDef(self, node):
        outer, self.types = self.types, {}
        self.generic_visit(node)
        self.types = outer

    def visit_ClassDef(self, node):
        bases = {self.qualified(base) or "" for base in node.bases}
        outer = (self.own_methods, self.scripted_class)
        # a *Mixin is written for a scripted-module class (SelfTestMixin for ScriptedLoadableModuleTest)
        self.scripted_class = any(base.split(".")[-1] in SCRIPTED_BASES for base in bases) or node.name.endswith("Mixin")
        self.own_methods = {item.name for item in node.body if isinstance(item, ast.FunctionDef)}
        for base in bases:  # a mixin of the project's own (not Slicer's): its methods are defined here too
            module, _, name = base.rpartition(".")
            if module and not module.startswith("slicer") and name not in SCRIPTED_BASES:
                self.own_methods |= set(dir(getattr(importlib.import_module(module), name)))
        self.generic_visit(node)
        self.own_methods, self.scripted_class = outer


def find_problems(source: str, api: SlicerApi) -> List[Problem]:
    return check(source, api)[0]


def check(source: str, api: SlicerApi):
    """(problems, uses checked) of one file's source against one release."""
    tree = ast.parse(source)
    checker = _Checker(api, _aliases(tree))
    checker.visit(tree)
    return checker.problems, checker.checked
