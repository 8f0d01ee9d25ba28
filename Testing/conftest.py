"""Shared test fixtures: the data folder, one torch thread, phantom files written to a temporary folder, a
random-weight model."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("OMP_NUM_THREADS", "1")  # the CPU is shared; before torch/numpy threads start

try:  # an in-tree run (no `pip install -e .`) still finds the library
    import SoftSpinalCordSegLib  # noqa: F401
except ImportError:
    sys.path.insert(0, str(REPO_ROOT / "SoftSpinalCordSeg"))
if str(REPO_ROOT) not in sys.path:  # the training package (SoftSpinalCordSegTraining) lives at the top
    sys.path.insert(0, str(REPO_ROOT))


def data_root() -> Path:
    return Path(os.environ.get("SOFTSEG_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared data folder ($SOFTSEG_DATA or ../shared/data); tests using it skip where it is absent."""
    root = data_root()
    if not (root / "README.md").is_file():
        pytest.skip(f"shared data not found at {root} (set SOFTSEG_DATA)")
    return root


@pytest.fixture(scope="session")
def shared_file(data_dir):
    """shared_file('labels/PAM50/PAM50_cord.nii.gz') -> its path, or skip when that file is missing."""

    def find(relative: str) -> Path:
        path = data_dir / relative
        if not path.is_file():
            pytest.skip(f"{relative} is missing from the shared data at {data_dir}")
        return path

    return find


@pytest.fixture(scope="session", autouse=True)
def single_torch_thread():
    """Tests share the CPU with a training job: keep torch to one thread when it is installed."""
    try:
        import torch
    except ImportError:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def write_phantom(tmp_path):
    """write_phantom(phantom, spacing, axcodes, oblique_deg, name) -> path of its soft mask (NIfTI unless the
    name ends with .nrrd); the mask and affine are also returned."""
    from SoftSpinalCordSegLib.io import Volume, save_like
    from SoftSpinalCordSegLib.phantom import make_phantom_mask

    def write(phantom, spacing=(0.8, 0.8, 0.8), axcodes="RAS", oblique_deg=0.0, name=None):
        mask, affine = make_phantom_mask(phantom, spacing, axcodes, oblique_deg)
        path = tmp_path / (name or f"phantom_{axcodes}_{oblique_deg:g}.nii.gz")
        save_like(mask, Volume(array=mask, affine=affine), path)
        return path, mask, affine

    return write


@pytest.fixture
def random_model(tmp_path, monkeypatch):
    """A random-weight network installed like the shipped one (fp16 weights + SHA-256) through
    $SOFTSEG_MODEL_DIR: the model's machinery runs end to end, its numbers mean nothing."""
    torch = pytest.importorskip("torch")
    from SoftSpinalCordSegLib import inference
    from SoftSpinalCordSegLib.model import build_network

    torch.manual_seed(0)
    weights = tmp_path / inference.WEIGHTS_NAME
    torch.save({k: v.half() for k, v in build_network().state_dict().items()}, weights)
    (tmp_path / (inference.WEIGHTS_NAME + ".sha256")).write_text(inference.sha256_of(weights) + "\n")
    monkeypatch.setenv("SOFTSEG_MODEL_DIR", str(tmp_path))
    inference.cached_network.cache_clear()
    yield tmp_path
    inference.cached_network.cache_clear()


@pytest.fixture(scope="session")
def tool():
    """tool('csa_drift') -> the script tools/csa_drift.py imported as a module."""
    import importlib

    folder = str(REPO_ROOT / "tools")

    def load(name):
        sys.path.insert(0, folder)
        try:
            return importlib.import_module(name)
        finally:
            sys.path.remove(folder)

    return load
