"""What the Slicer module installs into Slicer's Python, and how, without touching what Slicer or PyTorch own.

Torch belongs to Slicer's PyTorch extension (PyTorchUtils), which picks the build for the user's GPU; numpy,
SimpleITK and vtk are Slicer's own builds. pip therefore never installs or upgrades any of them: monai (whose
only dependencies are torch and numpy) is installed with `--no-deps`, and every pip call gets a constraints
file that pins the protected packages at their installed versions, so a dependency that would need another
version fails to install instead of replacing them. monai's range follows the installed torch (monai 1.5 needs
torch 2.4, 1.6 needs 2.8). A package that was already imported and is replaced on disk needs a restart.

Standard library only: this runs before the packages it checks are there.
"""

from __future__ import annotations

import importlib.metadata
import re
import sys
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

TORCH_REQUIREMENT = ">=2.0"  # installed through Slicer's PyTorch extension
# What the library needs beyond what Slicer bundles, as in pyproject.toml (the tested ranges).
SLICER_REQUIREMENTS = ["monai>=1.3,<1.7", "nibabel>=5.0", "scipy>=1.10", "scikit-image>=0.19"]
BUNDLED_WITH_SLICER = ("numpy", "SimpleITK", "vtk")
PROTECTED = ("torch",) + BUNDLED_WITH_SLICER  # never installed, upgraded or removed by pip
WITHOUT_DEPENDENCIES = ("monai",)  # its declared dependencies are all protected (torch, numpy)
MONAI_TORCH_FLOORS = (((1, 6), (2, 8)), ((1, 5), (2, 4)))  # (monai from, torch it requires), newest first


def _version(text: str) -> Tuple[int, ...]:
    """(major, minor, patch) of a version string ("2.1.0+cpu" -> (2, 1, 0))."""
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def installed_version(name: str) -> Optional[str]:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _split(requirement: str) -> Tuple[str, str]:
    return re.match(r"\s*([A-Za-z0-9_.\-]+)(.*)", requirement).groups()


def requirement_met(requirement: str, installed: Callable[[str], Optional[str]] = installed_version) -> bool:
    """Whether the installed distribution satisfies "name>=a,<b" (the bounds >=, >, <=, < and == are read)."""
    name, constraints = _split(requirement)
    version = installed(name)
    if version is None:
        return False
    checks = {">=": lambda a, b: a >= b, ">": lambda a, b: a > b, "<=": lambda a, b: a <= b,
              "<": lambda a, b: a < b, "==": lambda a, b: a == b}
    return all(checks[operator](_version(version), _version(bound))
               for operator, bound in re.findall(r"(>=|<=|==|>|<)\s*([\d.]+)", constraints))


def unmet_requirements(requirements: Sequence[str] = tuple(SLICER_REQUIREMENTS),
                       installed: Callable[[str], Optional[str]] = installed_version) -> List[str]:
    """The requirements whose package is not installed or not in the required range."""
    return [requirement for requirement in requirements if not requirement_met(requirement, installed)]


def for_torch(requirement: str, torch_version: Optional[str]) -> str:
    """The requirement with monai capped below the first release that needs a newer torch than the installed one."""
    name, _ = _split(requirement)
    if name != "monai" or torch_version is None:
        return requirement
    cap = None
    for monai_from, torch_needed in MONAI_TORCH_FLOORS:
        if _version(torch_version)[:2] < torch_needed:
            cap = monai_from
    return requirement + (f",<{cap[0]}.{cap[1]}" if cap else "")


@dataclass
class InstallPlan:
    """What to install: torch through PyTorchUtils (`torch` is "", "install" or "upgrade"), the rest with pip."""

    torch: str = ""
    torch_requirement: str = TORCH_REQUIREMENT
    without_dependencies: List[str] = field(default_factory=list)  # pip install --no-deps
    with_dependencies: List[str] = field(default_factory=list)
    constraints: List[str] = field(default_factory=list)  # protected packages pinned at their installed version

    @property
    def needed(self) -> bool:
        return bool(self.torch or self.without_dependencies or self.with_dependencies)

    def listed(self) -> List[str]:
        """One line per package, for the confirmation."""
        torch = [f"torch{self.torch_requirement} (through the PyTorch extension)"] if self.torch else []
        return torch + self.without_dependencies + self.with_dependencies

    def pip_arguments(self, constraints_file: str) -> List[List[str]]:
        """The argument lists for `slicer.util.pip_install`, one per pip call; the constraints file must hold
        `constraints` (one per line)."""
        pinned = ["-c", constraints_file] if self.constraints else []
        calls = []
        if self.without_dependencies:
            calls.append(self.without_dependencies + ["--no-deps"] + pinned)
        if self.with_dependencies:
            calls.append(self.with_dependencies + pinned)
        return calls


def make_plan(installed: Callable[[str], Optional[str]] = installed_version,
              requirements: Sequence[str] = tuple(SLICER_REQUIREMENTS)) -> InstallPlan:
    """The plan for the packages `installed` reports (name -> version or None). Where torch is missing, monai's
    range cannot follow it yet: plan again once PyTorchUtils has installed it."""
    plan = InstallPlan()
    torch_version = installed("torch")
    if torch_version is None:
        plan.torch = "install"
    elif not requirement_met("torch" + TORCH_REQUIREMENT, installed):
        plan.torch = "upgrade"
    for requirement in unmet_requirements([for_torch(r, torch_version) for r in requirements], installed):
        name, _ = _split(requirement)
        if name.lower() in (protected.lower() for protected in PROTECTED):
            raise ValueError(f"{name} is not pip's to install")
        (plan.without_dependencies if name in WITHOUT_DEPENDENCIES else plan.with_dependencies).append(requirement)
    plan.constraints = [f"{name}=={installed(name)}" for name in PROTECTED if installed(name) is not None]
    return plan


# --- restart ---------------------------------------------------------------------------------------------


def installed_distributions() -> Dict[str, str]:
    """{normalised distribution name: version} of everything installed."""
    found = {}
    for distribution in importlib.metadata.distributions():
        name = distribution.metadata["Name"]
        if name:
            found.setdefault(_normalised(name), distribution.version)
    return found


def _normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def top_level_modules(distribution_name: str) -> List[str]:
    """The import names a distribution provides (top_level.txt, else the first part of its .py files)."""
    try:
        distribution = importlib.metadata.distribution(distribution_name)
    except importlib.metadata.PackageNotFoundError:
        return []
    listed = distribution.read_text("top_level.txt")
    if listed:
        return [line.strip() for line in listed.splitlines() if line.strip()]
    names = set()
    for path in distribution.files or []:
        first = path.parts[0]
        if path.suffix in (".py", ".so", ".pyd") and not first.endswith((".dist-info", ".egg-info")) and first != "..":
            names.add(first.split(".")[0])
    return sorted(names)


def replaced_while_loaded(before: Mapping[str, str], after: Mapping[str, str],
                          loaded: Optional[Mapping[str, object]] = None) -> List[str]:
    """Distributions whose version changed (or that were removed) while one of their modules was imported:
    Python keeps running the old code, so Slicer must restart."""
    loaded = sys.modules if loaded is None else loaded
    replaced = []
    for name, version in sorted(before.items()):
        if after.get(name) != version and any(module in loaded for module in top_level_modules(name) or [name]):
            replaced.append(name)
    return replaced


def install(plan: InstallPlan, pip_install: Callable[[List[str]], object], install_torch: Callable[[str], object],
            replan: Callable[[], InstallPlan] = make_plan) -> List[str]:
    """Carry out a plan: torch first through `install_torch(requirement)` (PyTorchUtils), then pip through
    `pip_install(arguments)` (slicer.util.pip_install), planned again once torch is there. Returns the
    distributions replaced while imported: non-empty means Slicer must restart."""
    import os
    import tempfile

    before = installed_distributions()
    if plan.torch:
        install_torch(plan.torch_requirement)
        plan = replan()
        if plan.torch:
            raise RuntimeError(f"PyTorch{plan.torch_requirement} could not be installed: see the Python console")
    with tempfile.TemporaryDirectory(prefix="softseg-") as directory:
        constraints_file = os.path.join(directory, "constraints.txt")
        with open(constraints_file, "w") as stream:
            stream.write("".join(line + "\n" for line in plan.constraints))
        for arguments in plan.pip_arguments(constraints_file):
            pip_install(arguments)
    return replaced_while_loaded(before, installed_distributions())
