"""The Slicer module's dependency plan: torch only through PyTorchUtils, never pip; Slicer's numpy, SimpleITK
and vtk pinned; monai without its dependencies and within what the installed torch allows; restarts."""

from __future__ import annotations

import sys

import pytest

from SoftSpinalCordSegLib import dependencies
from SoftSpinalCordSegLib.dependencies import PROTECTED, install, make_plan, replaced_while_loaded

SLICER = {"numpy": "1.26.4", "SimpleITK": "2.4.0"}  # what a Slicer 5.8 install bundles (vtk has no metadata there)
OURS = {"monai": "1.4.0", "nibabel": "5.3.2", "scipy": "1.13.1", "scikit-image": "0.24.0"}


def installed(**versions):
    packages = {**SLICER, **versions}
    return lambda name: packages.get(name)


def pip_requirements(plan):
    """Every requirement pip is asked to install (what follows -c is the constraints file)."""
    names = []
    for arguments in plan.pip_arguments("constraints.txt"):
        assert arguments[-2:] == ["-c", "constraints.txt"]
        names += [word for word in arguments[:-2] if not word.startswith("-")]
    return names


def assert_pip_never_touches_protected(plan):
    for requirement in pip_requirements(plan):
        name = dependencies._split(requirement)[0].lower()
        assert name not in {p.lower() for p in PROTECTED}, requirement


def test_plan_with_nothing_installed():
    plan = make_plan(installed())
    assert plan.torch == "install" and plan.torch_requirement == dependencies.TORCH_REQUIREMENT
    assert plan.pip_arguments("c.txt") == [
        ["monai>=1.3,<1.7", "--no-deps", "-c", "c.txt"],
        ["nibabel>=5.0", "scipy>=1.10", "scikit-image>=0.19", "-c", "c.txt"],
    ]
    assert plan.constraints == ["numpy==1.26.4", "SimpleITK==2.4.0"]
    assert plan.listed()[0].startswith("torch>=2.0 (through the PyTorch extension)")
    assert_pip_never_touches_protected(plan)


def test_plan_with_everything_installed():
    plan = make_plan(installed(torch="2.4.1+cu121", **OURS))
    assert not plan.needed and plan.pip_arguments("c.txt") == [] and plan.listed() == []
    assert plan.constraints == ["torch==2.4.1+cu121", "numpy==1.26.4", "SimpleITK==2.4.0"]


def test_plan_with_an_old_monai_upgrades_it_alone_within_what_torch_allows():
    plan = make_plan(installed(torch="2.3.1+cu118", **{**OURS, "monai": "1.2.0"}))
    assert not plan.torch
    assert plan.pip_arguments("c.txt") == [["monai>=1.3,<1.7,<1.5", "--no-deps", "-c", "c.txt"]]  # 1.5 needs torch 2.4
    assert "torch==2.3.1+cu118" in plan.constraints  # a dependency that wants another torch fails, torch stays
    assert_pip_never_touches_protected(plan)
    # a monai too new for the torch there (1.6 needs torch 2.8) is replaced by one that works with it
    plan = make_plan(installed(torch="2.6.0", **{**OURS, "monai": "1.6.1"}))
    assert plan.without_dependencies == ["monai>=1.3,<1.7,<1.6"]
    assert make_plan(installed(torch="2.8.0", **{**OURS, "monai": "1.6.1"})).needed is False


def test_plan_with_torch_missing_or_too_old_goes_through_pytorchutils():
    plan = make_plan(installed(**OURS))
    assert plan.torch == "install" and not plan.without_dependencies and not plan.with_dependencies
    assert not any("torch" in line for line in plan.constraints)
    plan = make_plan(installed(torch="1.13.1", **OURS))
    assert plan.torch == "upgrade"
    assert_pip_never_touches_protected(plan)


def test_a_requirement_naming_a_protected_package_is_refused():
    with pytest.raises(ValueError, match="numpy is not pip's"):
        make_plan(installed(torch="2.4.0", **OURS), requirements=["numpy>=2.0"])


def test_install_runs_torch_first_then_pip_with_the_constraints_file(monkeypatch):
    calls = []
    monkeypatch.setattr(dependencies, "installed_distributions", lambda: {})

    def pip_install(arguments):
        constraints = arguments[arguments.index("-c") + 1]
        with open(constraints) as stream:
            calls.append(("pip", arguments[:arguments.index("-c")], stream.read().split()))

    before = make_plan(installed())
    after_torch = make_plan(installed(torch="2.4.1"))
    replaced = install(before, pip_install, lambda requirement: calls.append(("torch", requirement)), replan=lambda: after_torch)
    assert calls == [
        ("torch", ">=2.0"),
        # planned again once torch is there: monai capped below 1.6, which needs torch 2.8
        ("pip", ["monai>=1.3,<1.7,<1.6", "--no-deps"], ["torch==2.4.1", "numpy==1.26.4", "SimpleITK==2.4.0"]),
        ("pip", ["nibabel>=5.0", "scipy>=1.10", "scikit-image>=0.19"], ["torch==2.4.1", "numpy==1.26.4", "SimpleITK==2.4.0"]),
    ]
    assert replaced == []
    with pytest.raises(RuntimeError, match="could not be installed"):  # PyTorchUtils failed or was cancelled
        install(before, pip_install, lambda requirement: None, replan=lambda: before)


def test_restart_is_needed_when_an_imported_package_was_replaced():
    import numpy  # noqa: F401 (imported: replacing it needs a restart)

    assert "pip" not in sys.modules  # installed, never imported here
    now = dependencies.installed_distributions()
    assert "numpy" in now and "pip" in now and "scikit-image" in now
    before = {**now, "numpy": "0.1", "pip": "0.1"}
    assert replaced_while_loaded(before, now) == ["numpy"]
    assert replaced_while_loaded(now, now) == []
    import skimage  # noqa: F401  (distribution scikit-image, module skimage)

    assert replaced_while_loaded({**now, "scikit-image": "0.1"}, now) == ["scikit-image"]
    assert replaced_while_loaded({"removed-package": "1.0"}, now, loaded={"removed_package": object()}) == []
