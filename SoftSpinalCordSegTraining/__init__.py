"""Training of the shipped model: synthetic data, the training command and the tools that serve it.

Lives outside the Slicer module, so users of the extension and the `softseg` command never install it; run it
from a clone of the repository (`python -m SoftSpinalCordSegTraining --help`).
"""

import sys
from pathlib import Path

try:  # a clone without `pip install -e .` still finds the library beside this folder
    import SoftSpinalCordSegLib  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "SoftSpinalCordSeg"))
