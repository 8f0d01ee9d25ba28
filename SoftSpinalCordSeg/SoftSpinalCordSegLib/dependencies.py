"""The Python packages the Slicer module installs into Slicer's Python, and which of them are missing or too old.

Standard library only: this runs before the packages it checks are there.
"""

from __future__ import annotations

import importlib.metadata
import re
from typing import List, Sequence, Tuple

TORCH_REQUIREMENT = ">=2.0"  # installed through Slicer's PyTorch extension
# What the library needs beyond what Slicer bundles, as in pyproject.toml (the tested ranges).
SLICER_REQUIREMENTS = ["monai>=1.3,<1.7", "nibabel>=5.0", "scipy>=1.10", "scikit-image>=0.19"]


def _version(text: str) -> Tuple[int, ...]:
    """(major, minor, patch) of a version string ("2.1.0+cpu" -> (2, 1, 0))."""
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def requirement_met(requirement: str) -> bool:
    """Whether the installed distribution satisfies "name>=a,<b" (the bounds >=, >, <=, < and == are read)."""
    name, constraints = re.match(r"\s*([A-Za-z0-9_.\-]+)(.*)", requirement).groups()
    try:
        installed = _version(importlib.metadata.version(name))
    except importlib.metadata.PackageNotFoundError:
        return False
    checks = {">=": lambda a, b: a >= b, ">": lambda a, b: a > b, "<=": lambda a, b: a <= b,
              "<": lambda a, b: a < b, "==": lambda a, b: a == b}
    return all(checks[operator](installed, _version(bound))
               for operator, bound in re.findall(r"(>=|<=|==|>|<)\s*([\d.]+)", constraints))


def unmet_requirements(requirements: Sequence[str] = tuple(SLICER_REQUIREMENTS)) -> List[str]:
    """The requirements whose package is not installed or not in the required range (pip installs them as given)."""
    return [requirement for requirement in requirements if not requirement_met(requirement)]
