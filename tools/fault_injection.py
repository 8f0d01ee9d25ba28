"""Fault injection: bad files, bad options, damaged model files, signals and full disks against the `softseg`
command line (csa, segment, demo, batch) and the Python API.

    python tools/fault_injection.py [--only WORD] [--jobs 2] [--keep DIR]

Every case runs in its own process under RLIMIT_AS (2 GB) and is judged on what the user sees:
- handled: the expected outcome, i.e. a bad input ends with exit 2 and one line `softseg: error: FILE: ...`
  (a full disk or a read-only folder: exit 1, one line naming the file), a signal stops the run with
  128+N and a good input ends with 0 and every output readable;
- traceback: a Python traceback or warning reached the user, or the error was not one line;
- partial output: some but not all requested outputs exist, or a hidden temporary is left behind;
- replaced file: an input or a special file (a device, a pipe) was modified or replaced;
- silent wrong output: exit 0 where an error was due, or outputs written by a run that failed;
- memory: a bad-input run whose peak resident memory exceeded 1 GB.
The last line reads `N tried: N handled (0 tracebacks, 0 partial outputs, 0 replaced files, 0 silent wrong
outputs)` when everything is handled. Full disks are small tmpfs mounts where `mount -t tmpfs` works (root);
elsewhere RLIMIT_FSIZE stands in for them (writes fail with EFBIG), which the table says.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import resource
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "SoftSpinalCordSeg"))
MEMORY_LIMIT = 2 << 30  # RLIMIT_AS of every case
BAD_INPUT_RSS_MB = 1024  # a bad input must be refused within this
CASE_TIMEOUT_S = 180


@dataclass
class Case:
    name: str
    group: str
    args: List[str]  # softseg arguments, or ["--api", code] for an API case
    expect: str  # "error" (exit 2), "fail" (exit 1, one line), "ok" (exit 0), "stop" (a signal), "batch-fail"
    outputs: List[Path] = field(default_factory=list)  # what the run was asked to write
    watch: List[Path] = field(default_factory=list)  # files that must be left exactly as they were
    env: Dict[str, str] = field(default_factory=dict)
    signal_after_s: Optional[float] = None
    signum: int = signal.SIGTERM
    signal_group: bool = False  # the signal goes to the run's whole process group (a terminal, timeout, Slurm)
    fsize_limit: Optional[int] = None  # RLIMIT_FSIZE stand-in for a full disk
    folder: Optional[Path] = None  # checked for hidden temporaries afterwards
    then: Optional[Callable[["Case"], str]] = None  # an extra check: "" or the problem
    signalled_ns: Optional[int] = None  # when the signal was sent (file-system clock of this machine)
    pid: Optional[int] = None  # of the run's process (and of its group, with signal_group)


@dataclass
class Outcome:
    case: Case
    verdict: str  # handled, traceback, partial, replaced, silent, memory
    code: int
    peak_mb: float
    stderr: str
    detail: str = ""


# ------------------------------------------------------------------------------------------------ inputs
def nifti(path, array, affine=None, sform=True, dtype=None):
    import nibabel as nib

    image = nib.Nifti1Image(np.asarray(array) if dtype is None else np.asarray(array).astype(dtype),
                            np.eye(4) if affine is None else affine)
    if not sform:
        image.set_sform(None, code=0)
        image.set_qform(image.affine, code=1)
    nib.save(image, str(path))
    return Path(path)


def patched(path, offset, fmt, value):
    raw = bytearray(Path(path).read_bytes())
    raw[offset : offset + struct.calcsize(fmt)] = struct.pack(fmt, value)
    Path(path).write_bytes(bytes(raw))
    return Path(path)


def cord_mask(shape=(40, 40, 12)):
    mask = np.zeros(shape, np.float32)
    mask[16:24, 17:23, :] = 1.0
    return mask


def make_inputs(root: Path) -> Dict[str, Path]:
    """Every bad (and a few good) input file, written once."""
    import nibabel as nib
    import SimpleITK as sitk

    from SoftSpinalCordSegLib.cli import make_demo_input

    d = root / "inputs"
    d.mkdir()
    rng = np.random.default_rng(0)
    f = {}
    demo = make_demo_input(d)
    f["image"] = demo.image_path
    f["mask"] = demo.truth_path
    f["small_mask"] = nifti(d / "small_mask.nii.gz", cord_mask())
    noise = rng.random((40, 40, 8)).astype(np.float32)
    f["missing"] = d / "missing.nii.gz"
    f["folder.nii.gz"] = d / "folder.nii.gz"
    f["folder.nii.gz"].mkdir()
    f["txt"] = d / "notes.txt"
    f["txt"].write_text("hello\n")
    f["empty"] = d / "empty.nii.gz"
    f["empty"].write_bytes(b"")
    f["garbage.nii"] = d / "garbage.nii"
    f["garbage.nii"].write_bytes(rng.integers(0, 255, 5000, dtype=np.uint8).tobytes())
    f["garbage.nii.gz"] = d / "garbage.nii.gz"
    f["garbage.nii.gz"].write_bytes(b"\x1f\x8b" + rng.integers(0, 255, 5000, dtype=np.uint8).tobytes())
    good = nifti(d / "good.nii.gz", noise)
    f["truncated.nii.gz"] = d / "truncated.nii.gz"
    f["truncated.nii.gz"].write_bytes(good.read_bytes()[:2000])
    plain = nifti(d / "plain.nii", noise)
    f["truncated.nii"] = d / "truncated.nii"
    f["truncated.nii"].write_bytes(plain.read_bytes()[:3000])
    for name, header_class, shape in (("huge1", nib.Nifti1Header, (32767, 32767, 32767)),
                                      ("huge2", nib.Nifti2Header, (100000, 100000, 100000)),
                                      ("huge3", nib.Nifti1Header, (3000, 3000, 1000)),
                                      ("huge4d", nib.Nifti1Header, (512, 512, 512, 2000)),
                                      ("zero_dim", nib.Nifti1Header, (0, 40, 8))):
        header = header_class()
        header.set_data_shape(shape)
        header.set_data_dtype(np.float32)
        f[name] = d / f"{name}.nii"
        f[name].write_bytes(header.binaryblock + b"\0" * 4096)
    f["huge_gz"] = d / "huge.nii.gz"
    header = nib.Nifti1Header()
    header.set_data_shape((4000, 4000, 8))
    header.set_data_dtype(np.float32)
    import gzip

    f["huge_gz"].write_bytes(gzip.compress(header.binaryblock + b"\0" * 4 + b"\0" * 100_000))
    f["2d"] = nifti(d / "2d.nii.gz", rng.random((40, 40)).astype(np.float32))
    f["5d"] = nifti(d / "5d.nii.gz", rng.random((10, 10, 4, 2, 2)).astype(np.float32))
    f["4d"] = nifti(d / "4d.nii.gz", rng.random((40, 40, 8, 3)).astype(np.float32))
    f["constant"] = nifti(d / "constant.nii.gz", np.full((40, 40, 8), 7, np.float32))
    f["empty_mask"] = nifti(d / "empty_mask.nii.gz", np.zeros((40, 40, 8), np.float32))
    nan = noise.copy()
    nan[3, 3, 3] = np.nan
    f["nan"] = nifti(d / "nan.nii.gz", nan)
    inf = cord_mask()
    inf[3, 3, 3] = np.inf
    f["inf"] = nifti(d / "inf.nii.gz", inf)
    f["1e300"] = nifti(d / "1e300.nii.gz", rng.random((40, 40, 8)) * 1e300)
    f["1e-300"] = nifti(d / "1e-300.nii.gz", rng.random((40, 40, 8)) * 1e-300)
    f["complex64"] = nifti(d / "complex64.nii.gz", cord_mask().astype(np.complex64))
    f["complex128"] = nifti(d / "complex128.nii.gz", cord_mask().astype(np.complex128))
    rgb = np.zeros((40, 40, 8), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    f["rgb"] = d / "rgb.nii.gz"
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), str(f["rgb"]))
    f["zero_pixdim"] = patched(nifti(d / "zero_pixdim.nii", cord_mask(), np.diag([0.5, 0.5, 2, 1]), sform=False),
                               80, "<f", 0.0)
    f["nan_pixdim"] = patched(nifti(d / "nan_pixdim.nii", cord_mask(), sform=False), 80, "<f", float("nan"))
    f["nan_sform"] = patched(nifti(d / "nan_sform.nii", cord_mask()), 280, "<f", float("nan"))
    singular = np.eye(4)
    singular[:3, 1] = singular[:3, 0]
    f["singular"] = nifti(d / "singular.nii.gz", cord_mask(), singular)
    f["scaled_255"] = nifti(d / "scaled_255.nii.gz", cord_mask() * rng.integers(1, 255, (40, 40, 12)))
    f["other_grid"] = nifti(d / "other_grid.nii.gz", np.ones((30, 30, 12), np.int16))
    f["levels_empty"] = nifti(d / "levels_empty.nii.gz", np.zeros((40, 40, 12), np.int16))
    levels = np.zeros((40, 40, 12), np.int16)
    levels[:, :, :6], levels[:, :, 6:] = 3, 2
    f["levels"] = nifti(d / "levels.nii.gz", levels)
    f["big_voxels"] = nifti(d / "big_voxels.nii.gz", noise, np.diag([500, 500, 500, 1]))
    f["three"] = nifti(d / "three.nii.gz", rng.random((3, 3, 3)).astype(np.float32))
    f["flat"] = nifti(d / "flat.nii.gz", rng.random((131, 1, 16)).astype(np.float32))
    f["tiny_voxels"] = nifti(d / "tiny_voxels.nii.gz", noise, np.diag([1e-3, 1e-3, 1e-3, 1]))
    f["garbage.nrrd"] = d / "garbage.nrrd"
    f["garbage.nrrd"].write_text("NRRD0004\ntype: float\ndimension: 3\nsizes: 40 40 8\nencoding: raw\n\nxx")
    f["huge.nrrd"] = d / "huge.nrrd"
    f["huge.nrrd"].write_text("NRRD0004\ntype: float\ndimension: 3\nsizes: 30000 30000 3000\nspacings: 1 1 1\n"
                              "encoding: raw\n\n" + "x" * 100)
    image = sitk.GetImageFromArray(np.moveaxis(cord_mask(), (0, 1, 2), (2, 1, 0)))
    f["mask.nrrd"] = d / "mask.nrrd"
    sitk.WriteImage(image, str(f["mask.nrrd"]))
    f["zero_spacing.nrrd"] = d / "zero_spacing.nrrd"
    f["zero_spacing.nrrd"].write_bytes(f["mask.nrrd"].read_bytes().replace(b"space directions: (1,0,0) (0,1,0) (0,0,1)",
                                                                            b"space directions: (0,0,0) (0,1,0) (0,0,1)"))
    f["image.nrrd"] = d / "image.nrrd"
    from SoftSpinalCordSegLib.io import load_volume, save_like

    volume = load_volume(f["image"])
    save_like(volume.array, volume, f["image.nrrd"])
    f["image_4d"] = nifti(d / "image_4d.nii.gz", np.stack([volume.array, volume.array[::-1]], -1), volume.affine)
    f["lps_crop"] = nifti(d / "lps_crop.nii.gz", volume.array[10:70, 10:70, :12], volume.affine)
    return f


# ------------------------------------------------------------------------------------------------ model folders
def make_model_dirs(root: Path) -> Dict[str, Path]:
    import torch

    from SoftSpinalCordSegLib import inference

    shipped = inference.model_dir()
    models = {}

    def copy(name, change=None, rehash=True):
        folder = root / "models" / name
        shutil.copytree(shipped, folder)
        if change is not None:
            change(folder)
        if rehash:
            weights = folder / inference.WEIGHTS_NAME
            if weights.exists():
                (folder / (inference.WEIGHTS_NAME + ".sha256")).write_text(inference.sha256_of(weights) + "\n")
        models[name] = folder

    weights_of = lambda folder: folder / inference.WEIGHTS_NAME  # noqa: E731
    state = torch.load(weights_of(shipped), map_location="cpu", weights_only=True)
    copy("garbage", lambda f: weights_of(f).write_bytes(os.urandom(50_000)))
    copy("truncated", lambda f: weights_of(f).write_bytes(weights_of(shipped).read_bytes()[:100_000]))
    def flip_a_byte(folder):
        data = bytearray(weights_of(folder).read_bytes())
        data[len(data) // 2] ^= 0xFF
        weights_of(folder).write_bytes(bytes(data))

    copy("bad checksum", flip_a_byte, rehash=False)
    copy("no checksum", lambda f: (f / (inference.WEIGHTS_NAME + ".sha256")).unlink(), rehash=False)
    copy("other network", lambda f: torch.save({"fc.weight": torch.zeros(10, 10)}, weights_of(f)))
    wrong = dict(state)
    first = next(iter(wrong))
    wrong[first] = torch.zeros(3, 3, 3)
    copy("one wrong shape", lambda f: torch.save(wrong, weights_of(f)))
    copy("NaN weights", lambda f: torch.save({k: torch.full_like(v, float("nan")) for k, v in state.items()},
                                             weights_of(f)))
    copy("a pickle", lambda f: torch.save([1, 2, 3], weights_of(f)))
    copy("corrupt model.json", lambda f: (f / "model.json").write_text('{"rater_margin_mm": 0.8,'))
    copy("model.json a list", lambda f: (f / "model.json").write_text("[1, 2]"))
    copy("model.json bad margin", lambda f: (f / "model.json").write_text('{"rater_margin_mm": "wide"}'))
    architecture = inference.ARCHITECTURE_NAME

    def garbage_architecture(folder):
        (folder / architecture).write_bytes(os.urandom(20_000))
        (folder / (architecture + ".sha256")).write_text(inference.sha256_of(folder / architecture) + "\n")

    if (shipped / architecture).exists():
        copy("garbage architecture (MONAI fallback)", garbage_architecture)
        copy("architecture bad checksum", lambda f: (f / (architecture + ".sha256")).write_text("0" * 64 + "\n"))
    empty = root / "models" / "empty"
    empty.mkdir(parents=True)
    models["empty folder"] = empty
    models["nowhere"] = root / "models" / "nowhere"
    return models


# ------------------------------------------------------------------------------------------------ cases
def build_cases(root: Path, f: Dict[str, Path], models: Dict[str, Path], disks: "Disks") -> List[Case]:
    cases: List[Case] = []
    out = root / "out"

    def folder(name):
        path = out / name.replace(" ", "_").replace("/", "_")
        path.mkdir(parents=True, exist_ok=True)
        return path

    def add(name, group, args, expect, outputs=(), watch=(), where=None, **extra):
        cases.append(Case(name, group, [str(a) for a in args], expect, list(outputs), list(watch), folder=where, **extra))

    # --- csa: bad files
    bad_masks = ["missing", "folder.nii.gz", "txt", "empty", "garbage.nii", "garbage.nii.gz", "truncated.nii.gz",
                 "truncated.nii", "huge1", "huge2", "huge3", "huge4d", "zero_dim", "huge_gz", "2d", "5d", "4d",
                 "empty_mask", "nan", "inf", "1e300", "complex64", "complex128", "rgb", "zero_pixdim", "nan_pixdim",
                 "nan_sform", "singular", "scaled_255", "garbage.nrrd", "huge.nrrd", "zero_spacing.nrrd"]
    for key in bad_masks:
        where = folder(f"csa_{key}")
        add(f"csa {key}", "csa bad file", ["csa", "-q", f[key], "-o", where / "csa.csv", "--plot", where / "csa.png"],
            "error", [where / "csa.csv", where / "csa.png"], [f[key]], where)
    # --- csa: bad options and outputs
    where = folder("csa_opts")
    m = f["small_mask"]
    options = {
        "levels other grid": ["--levels", f["other_grid"]], "levels empty": ["--levels", f["levels_empty"]],
        "perlevel without levels": ["--perlevel"], "vert garbage": ["--levels", f["levels"], "--vert", "C2-C3"],
        "vert outside": ["--levels", f["levels"], "--vert", "7:9"], "slices outside": ["--slices", "100:200"],
        "slices reversed text": ["--slices", "a:b"], "plot not png": ["--plot", where / "csa.jpg"],
    }
    for name, extra in options.items():
        add(f"csa {name}", "csa bad option", ["csa", "-q", m, "-o", where / f"{name}.csv", *extra], "error",
            [where / f"{name}.csv"], [m, f["levels"]], where)
    add("csa output = input", "csa bad output", ["csa", "-q", m, "-o", m], "error", [], [m], where)
    add("csa output is a folder", "csa bad output", ["csa", "-q", m, "-o", where], "error", [], [m], where)
    add("csa output under a file", "csa bad output", ["csa", "-q", m, "-o", f["txt"] / "csa.csv"], "fail", [],
        [m, f["txt"]], where)
    add("csa two outputs one name", "csa bad output", ["csa", "-q", m, "-o", where / "same.png", "--plot",
                                                        where / "same.png"], "error", [where / "same.png"], [m], where)
    for special in disks.specials:
        add(f"csa output {special.name} ({_kind(special)})", "special file", ["csa", "-q", m, "-o", special], "error",
            [], [m, special], where)
        add(f"csa plot {special.name} ({_kind(special)})", "special file",
            ["csa", "-q", m, "-o", where / f"with_{special.name}.csv", "--plot", special], "error",
            [where / f"with_{special.name}.csv"], [m, special], where)
    # --- csa: good runs
    for key, extra in (("mask", []), ("small_mask", ["--levels", f["levels"], "--perlevel"]),
                       ("small_mask", ["--levels", f["levels"], "--vert", "2:3"]), ("mask.nrrd", [])):
        where = folder(f"csa_ok_{key}_{len(extra)}")
        add(f"csa good {key} {' '.join(map(str, extra[2:]))}".strip(), "good run",
            ["csa", "-q", f[key], "-o", where / "csa.csv", "--plot", where / "csa.png", *extra], "ok",
            [where / "csa.csv", where / "csa.png"], [f[key]], where)
    link_target = folder("csa_link") / "target.csv"
    link_target.write_text("old\n")
    (link_target.parent / "link.csv").symlink_to(link_target)
    add("csa output is a symbolic link", "good run", ["csa", "-q", m, "-o", link_target.parent / "link.csv"], "ok",
        [link_target], [m], link_target.parent,
        then=lambda c: "" if (link_target.parent / "link.csv").is_symlink() else "the link was replaced by a file")

    # --- segment: refused before the model runs
    for key in ["big_voxels", "three", "flat", "tiny_voxels", "complex64", "rgb", "zero_pixdim", "nan_pixdim",
                "nan_sform", "1e300", "1e-300", "constant", "nan", "garbage.nii.gz", "huge1", "huge2", "4d", "2d"]:
        where = folder(f"seg_{key}")
        outputs = [where / "prob.nii.gz", where / "mask.nii.gz", where / "csa.csv", where / "qc.png"]
        add(f"segment {key}", "segment bad file", ["segment", "-q", f[key], "-o", outputs[0], "--mask", outputs[1],
                                                   "--csa", outputs[2], "--qc", outputs[3]], "error", outputs, [f[key]], where)
    where = folder("seg_opts")
    image = f["image"]
    for name, extra in {"threshold 0": ["--threshold", "0"], "threshold 1.5": ["--threshold", "1.5"],
                        "threshold nan": ["--threshold", "nan"], "volume of a 3D image": ["--volume", "2"],
                        "output .nhdr": [], "qc not png": ["--qc", where / "qc.gif"], "device cuda": ["--device", "cuda"]}.items():
        output = where / ("prob.nhdr" if name == "output .nhdr" else f"{name}.nii.gz")
        expect = "error" if not (name == "device cuda" and _has_cuda()) else "ok"
        add(f"segment {name}", "segment bad option", ["segment", "-q", image, "-o", output, *extra], expect, [output],
            [image], where)
    add("segment 4D volume out of range", "segment bad option",
        ["segment", "-q", f["image_4d"], "-o", where / "v.nii.gz", "--volume", "5"], "error", [where / "v.nii.gz"],
        [f["image_4d"]], where)
    for special in disks.specials[:2]:
        add(f"segment --csa {special.name} ({_kind(special)})", "special file",
            ["segment", "-q", image, "-o", where / f"p_{special.name}.nii.gz", "--csa", special], "error",
            [where / f"p_{special.name}.nii.gz"], [image, special], where)
    # --- segment: good runs (the model runs)
    for key, extra in (("image", []), ("image.nrrd", []), ("image_4d", ["--volume", "1"]), ("lps_crop", [])):
        where = folder(f"seg_ok_{key}")
        outputs = [where / "prob.nii.gz", where / "mask.nii.gz", where / "csa.csv", where / "qc.png"]
        add(f"segment good {key}", "good run", ["segment", "-q", f[key], "-o", outputs[0], "--mask", outputs[1],
                                                "--csa", outputs[2], "--qc", outputs[3], *extra], "ok", outputs,
            [f[key]], where)

    # --- model files
    for name, model in models.items():
        where = folder(f"model_{name}")
        outputs = [where / "prob.nii.gz", where / "csa.csv"]
        if "model.json" in name:
            add(f"demo with {name}", "model files", ["demo", "-q", "--output-dir", where / "demo"], "error",
                [where / "demo" / "demo_cord_prob.nii.gz"], [], where / "demo", env={"SOFTSEG_MODEL_DIR": str(model)})
            continue
        expect = "ok" if "fallback" in name else "error"
        add(f"segment with {name} weights", "model files", ["segment", "-q", image, "-o", outputs[0], "--csa", outputs[1]],
            expect, outputs, [image], where, env={"SOFTSEG_MODEL_DIR": str(model)})

    # --- signals in the middle of a run: everything or nothing, no temporary left
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        for delay in (0.5, 3.0, 6.0, 10.0):
            where = folder(f"sig_{signum.name}_{delay}")
            outputs = [where / "prob.nii.gz", where / "mask.nii.gz", where / "csa.csv", where / "csa.png", where / "qc.png"]
            add(f"segment {signum.name} after {delay:g} s", "signal",
                ["segment", "-q", image, "-o", outputs[0], "--mask", outputs[1], "--csa", outputs[2], "--plot",
                 outputs[3], "--qc", outputs[4]], "stop", outputs, [image], where, signal_after_s=delay, signum=signum)
        for delay in (1.0, 2.0):
            where = folder(f"sig_csa_{signum.name}_{delay}")
            outputs = [where / "csa.csv", where / "csa.png"]
            add(f"csa {signum.name} after {delay:g} s", "signal", ["csa", "-q", f["mask"], "-o", outputs[0], "--plot",
                                                                   outputs[1]], "stop", outputs, [f["mask"]], where,
                signal_after_s=delay, signum=signum)
    where = folder("sig_kill_then_rerun")
    stale = where / f".csa.csv.{_dead_owner_tag()}.abcdefgh.tmp.csv"  # as a killed run leaves it
    outputs = [where / "csa.csv", where / "csa.png"]
    stale.write_text("left by a killed run")
    add("csa rerun after a killed run", "signal", ["csa", "-q", f["mask"], "-o", outputs[0], "--plot", outputs[1]],
        "ok", outputs, [f["mask"]], where, then=lambda c: "" if not stale.exists() else "the stale temporary stayed")

    # --- full disks (tmpfs) or RLIMIT_FSIZE, and a read-only folder
    for size_kb in (8, 40, 100, 160):
        where = disks.full(size_kb)
        outputs = [where / "prob.nii.gz", where / "mask.nii.gz", where / "csa.csv", where / "csa.png", where / "qc.png"]
        limit = None if disks.tmpfs else size_kb * 1024
        add(f"segment on a {size_kb} kB disk ({'tmpfs' if disks.tmpfs else 'RLIMIT_FSIZE'})", "disk full",
            ["segment", "-q", image, "-o", outputs[0], "--mask", outputs[1], "--csa", outputs[2], "--plot", outputs[3],
             "--qc", outputs[4]], "fail", outputs, [image], where, fsize_limit=limit)
    for size_kb in (4, 30):
        where = disks.full(size_kb)
        outputs = [where / "csa.csv", where / "csa.png"]
        add(f"csa on a {size_kb} kB disk ({'tmpfs' if disks.tmpfs else 'RLIMIT_FSIZE'})", "disk full",
            ["csa", "-q", f["mask"], "-o", outputs[0], "--plot", outputs[1]], "fail", outputs, [f["mask"]], where,
            fsize_limit=None if disks.tmpfs else size_kb * 1024)
    if disks.read_only is not None:
        add("csa into a read-only folder", "disk full", ["csa", "-q", m, "-o", disks.read_only / "csa.csv"], "fail",
            [disks.read_only / "csa.csv"], [m], disks.read_only)

    # --- batch
    cohort = root / "cohort"
    cohort.mkdir()
    shutil.copy(f["lps_crop"], cohort / "sub-01_T2w.nii.gz")
    shutil.copy(f["garbage.nii.gz"], cohort / "sub-02_T2w.nii.gz")
    shutil.copy(f["big_voxels"], cohort / "sub-03_T2w.nii.gz")
    derivatives = out / "batch"
    done = [derivatives / "sub-01" / "anat" / name for name in ("sub-01_T2w_label-SC_probseg.nii.gz",
                                                      "sub-01_T2w_label-SC_mask.nii.gz", "sub-01_T2w_csa.csv",
                                                      "sub-01_T2w_qc.png")]
    killed = derivatives / "sub-01" / "anat" / f".sub-01_T2w_csa.csv.{_dead_owner_tag()}.abcdefgh.tmp.csv"

    def batch_checks(case):
        failed = [p for p in (derivatives / "sub-02", derivatives / "sub-03") if p.exists() and any(p.iterdir())]
        return f"outputs of failed images: {failed}" if failed else ""

    add("batch cohort with 2 bad images", "batch", ["batch", "-q", cohort, "-o", derivatives, "-j", "1"], "batch-fail",
        done, list(cohort.iterdir()), derivatives / "sub-01" / "anat", then=batch_checks)
    taken = out / "taken.txt"
    taken.write_text("x")
    add("batch output is a file", "batch", ["batch", "-q", cohort, "-o", taken], "error", [], [taken])
    add("batch input missing", "batch", ["batch", "-q", root / "no_cohort", "-o", out / "b2"], "error", [])
    add("batch --workers 0", "batch", ["batch", "-q", cohort, "-o", out / "b3", "-j", "0"], "error", [])
    add("batch --threshold 2", "batch", ["batch", "-q", cohort, "-o", out / "b4", "--threshold", "2"], "error", [])
    add("batch unreachable scheduler", "batch", ["batch", "-q", cohort, "-o", out / "b5", "--scheduler",
                                                 "tcp://127.0.0.1:1"], "error", [])
    add("batch with garbage weights", "batch", ["batch", "-q", cohort, "-o", out / "b6", "-j", "1", "--include",
                                                "sub-01*"], "error", [], env={"SOFTSEG_MODEL_DIR": str(models["garbage"])})
    add("batch with SOFTSEG_MODEL_DIR nowhere", "batch", ["batch", "-q", cohort, "-o", out / "b7"], "error", [],
        env={"SOFTSEG_MODEL_DIR": str(models["nowhere"])})
    cases[-1].then = None
    rerun = Case("batch rerun after a killed worker", "batch", [str(a) for a in ["batch", "-q", cohort, "-o",
                 derivatives, "-j", "1", "--overwrite", "--include", "sub-01*"]], "ok", done, [], folder=derivatives / "sub-01" / "anat")
    rerun.then = lambda c: "" if not killed.exists() else "the killed worker's temporary stayed"
    rerun.env = {"_PREPARE_STALE": str(killed)}
    cases.append(rerun)

    # a stop signal sent to the whole process group (a terminal, timeout, Slurm) while the workers segment
    busy_cohort = root / "busy_cohort"
    busy_cohort.mkdir()
    for n in range(1, 7):
        shutil.copy(f["image"], busy_cohort / f"sub-0{n}_T2w.nii.gz")
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        stopped = out / f"batch_{signum.name}"
        add(f"batch {signum.name} to its process group after 4 s", "batch",
            ["batch", "-q", busy_cohort, "-o", stopped, "-j", "2"], "stop", [], list(busy_cohort.iterdir()), stopped,
            signal_after_s=4.0, signum=signum, signal_group=True,
            then=lambda c, stopped=stopped: _left_by_group(c, stopped))

    # --- the Python API: one process per case
    for name, code, expect in api_cases(f):
        cases.append(Case(f"API {name}", "API", ["--api", code], expect))
    return cases


def _dead_owner_tag() -> str:
    """HOST-PID as in the temporaries of a process of this machine that no longer runs."""
    from SoftSpinalCordSegLib.io import _owner_tag

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    return f"{_owner_tag().split('-')[0]}-{dead.pid}"


def _kind(path: Path) -> str:
    mode = os.lstat(path).st_mode
    return "char device" if stat.S_ISCHR(mode) else "fifo" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode) else "file"


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def api_error_cases(prefix: str, setup: str, calls: Dict[str, str]):
    """(prefix + name, code, 'error') for each call of calls run after setup: each must raise InputError."""
    return [(prefix + name, "import numpy as np\n" + setup + call, "error") for name, call in calls.items()]


def api_cases(f: Dict[str, Path]):
    """(name, code, expect): the code raises InputError ('error') or returns ('ok')."""
    seg = "from SoftSpinalCordSegLib.inference import segment_image as S\n"
    csa = "from SoftSpinalCordSegLib.morphometry import compute_csa as C\n"
    io = "from SoftSpinalCordSegLib import io\n"
    img = "I = np.random.rand(40, 40, 8)\n"
    mask = "M = np.zeros((40, 40, 12)); M[16:24, 17:23] = 1\n"
    segment_calls = {"2D array": "S(np.zeros((40, 40)), np.eye(4))", "4D array": "S(np.zeros((4, 4, 4, 2)), np.eye(4))",
                     "zero-size array": "S(np.zeros((0, 40, 8)), np.eye(4))", "complex array": "S(I + 1j, np.eye(4))",
                     "bool array": "S(I > 0.5, np.eye(4))", "object array": "S(np.array([[['a']]], object), np.eye(4))",
                     "string": "S('image.nii', np.eye(4))", "None image": "S(None, np.eye(4))",
                     "NaN voxel": "I[1, 1, 1] = np.nan; S(I, np.eye(4))", "inf voxel": "I[1, 1, 1] = np.inf; S(I, np.eye(4))",
                     "1e300 voxels": "S(I * 1e300, np.eye(4))", "constant": "S(np.ones((40, 40, 8)), np.eye(4))",
                     "None affine": "S(I, None)", "3x3 affine": "S(I, np.eye(3))", "NaN affine": "S(I, np.full((4, 4), np.nan))",
                     "singular affine": "S(I, np.diag([1, 0, 1, 1.0]))", "string affine": "S(I, 'eye')",
                     "2000 mm voxels": "S(np.random.rand(4, 4, 2), np.diag([2000, 2000, 2000, 1.0]))",
                     "3x3x3 image": "S(np.random.rand(3, 3, 3), np.eye(4))",
                     "131x1x16 image": "S(np.random.rand(131, 1, 16), np.eye(4))",
                     "bad device": "S(I, np.eye(4), device='tpu')"}
    cases = api_error_cases("segment_image ", seg + img, segment_calls)
    compute_csa_calls = {"NaN voxel": "M[20, 20, 5] = np.nan; C(M, np.eye(4))", "inf voxel": "M[0, 0, 0] = np.inf; C(M, np.eye(4))",
                         "2D": "C(M[:, :, 0], np.eye(4))", "empty": "C(np.zeros((10, 10, 4)), np.eye(4))",
                         "None affine": "C(M, None)", "3x3 affine": "C(M, np.eye(3))", "NaN affine": "C(M, np.full((4, 4), np.nan))",
                         "singular affine": "C(M, np.diag([1, 1, 0, 1.0]))", "smoothing -5": "C(M, np.eye(4), smoothing_mm=-5)",
                         "smoothing NaN": "C(M, np.eye(4), smoothing_mm=float('nan'))",
                         "smoothing None": "C(M, np.eye(4), smoothing_mm=None)",
                         "levels of another shape": "C(M, np.eye(4), levels=np.ones((3, 3, 3)))",
                         "string mask": "C('mask', np.eye(4))"}
    cases += api_error_cases("compute_csa ", csa + mask, compute_csa_calls)
    io_calls = {"load_volume missing": f"io.load_volume({str(f['missing'])!r})",
                "load_volume complex": f"io.load_volume({str(f['complex64'])!r})",
                "load_volume huge": f"io.load_volume({str(f['huge1'])!r})",
                "load_volume 4D without index": f"io.load_volume({str(f['4d'])!r})",
                "load_mask zero pixdim": f"io.load_mask({str(f['zero_pixdim'])!r})",
                "load_mask NaN sform": f"io.load_mask({str(f['nan_sform'])!r})",
                "an output on /dev/null": "io.refuse_folder('/dev/null')"}
    cases += api_error_cases("", io, io_calls)
    cases.append(("compute_csa good mask", "import numpy as np\n" + csa + mask + "assert len(C(M, np.eye(4))) == 12", "ok"))
    return cases


API_RUNNER = textwrap.dedent("""
    import sys, warnings
    from SoftSpinalCordSegLib.errors import InputError
    code = sys.argv[1]
    try:
        exec(compile(code, "<case>", "exec"), {})
    except InputError as error:
        print("softseg: error: " + " ".join(str(error).split()), file=sys.stderr)
        sys.exit(2)
""")


# ------------------------------------------------------------------------------------------------ disks
class Disks:
    """Small full filesystems (tmpfs where mounting works, else folders with RLIMIT_FSIZE), a read-only one,
    and special files to give as outputs."""

    def __init__(self, root: Path):
        self.root = root
        self.mounts: List[Path] = []
        self.tmpfs = self._try_mount(root / "probe", "size=16k")
        self.read_only = None
        if self.tmpfs:
            ro = root / "read_only"
            if self._try_mount(ro, "size=16k,ro"):
                self.read_only = ro
        self.specials: List[Path] = []
        special_dir = root / "special"
        special_dir.mkdir()
        fifo = special_dir / "fifo"
        os.mkfifo(fifo)
        self.specials.append(fifo)
        with contextlib.suppress(OSError):
            device = special_dir / "chardev"
            os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # as /dev/null
            self.specials.append(device)
        if Path("/dev/null").exists() and os.geteuid() != 0:  # as root a failure would replace the real one
            self.specials.append(Path("/dev/null"))

    def _try_mount(self, path: Path, options: str) -> bool:
        path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
        if done.returncode == 0:
            self.mounts.append(path)
        return done.returncode == 0

    def full(self, size_kb: int) -> Path:
        path = self.root / f"disk_{size_kb}k_{len(self.mounts)}"
        if not (self.tmpfs and self._try_mount(path, f"size={size_kb}k")):
            path.mkdir(parents=True, exist_ok=True)
        return path

    def close(self):
        for path in reversed(self.mounts):
            subprocess.run(["umount", str(path)], capture_output=True)


# ------------------------------------------------------------------------------------------------ running
def snapshot(path: Path):
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISREG(info.st_mode):
        return ("file", hashlib.sha256(path.read_bytes()).hexdigest())
    return (stat.S_IFMT(info.st_mode), info.st_ino, info.st_rdev)


def run_case(case: Case) -> Outcome:
    if "_PREPARE_STALE" in case.env:
        stale = Path(case.env["_PREPARE_STALE"])
        stale.parent.mkdir(parents=True, exist_ok=True)
        stale.write_text("left by a killed worker")
        os.utime(stale, (time.time() - 3 * 86400,) * 2)
    before = {path: snapshot(path) for path in case.watch}
    if case.args[0] == "--api":
        command = [sys.executable, "-c", API_RUNNER, case.args[1]]
    else:
        command = [sys.executable, "-m", "SoftSpinalCordSegLib", *case.args]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "SoftSpinalCordSeg"),
               **{k: v for k, v in case.env.items() if not k.startswith("_")})

    def limits():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
        if case.fsize_limit is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (case.fsize_limit, case.fsize_limit))

    with tempfile.TemporaryFile("w+") as err_file:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err_file, env=env, preexec_fn=limits,
                                   stdin=subprocess.DEVNULL, start_new_session=case.signal_group)
        case.pid = process.pid
        # os.kill, not Popen.send_signal/kill: those poll first, and a poll that reaps the finished child leaves
        # os.wait4 below without it (ChildProcessError); an unreaped child is a zombie that ignores the signal.
        if case.signal_after_s is not None:
            time.sleep(case.signal_after_s)
            case.signalled_ns = time.time_ns()
            (os.killpg if case.signal_group else os.kill)(process.pid, case.signum)
        deadline = time.time() + CASE_TIMEOUT_S
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.time() > deadline:
                os.kill(process.pid, signal.SIGKILL)
            time.sleep(0.05)
        process.returncode = code = os.waitstatus_to_exitcode(status)
        err_file.seek(0)
        stderr = err_file.read()
    peak_mb = usage.ru_maxrss / 1024
    return judge(case, code, stderr, peak_mb, before)


def _left_by_group(case: Case, folder: Path) -> str:
    """What a stopped batch's process group left: processes still alive, temporaries anywhere in its derivatives
    (looked for once every process of the group is gone)."""
    for _ in range(50):
        try:
            os.killpg(case.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.killpg(case.pid, signal.SIGKILL)
        return "processes of the group still running 5 s after the batch ended"
    temporaries = [p.name for p in folder.rglob(".*.tmp*")]
    return f"temporaries left: {temporaries}" if temporaries else ""


def judge(case: Case, code: int, stderr: str, peak_mb: float, before) -> Outcome:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    existing = [p for p in case.outputs if p.exists()]
    temporaries = [p for p in (case.folder.iterdir() if case.folder and case.folder.is_dir() else [])
                   if p.name.startswith(".") and ".tmp" in p.name]

    def outcome(verdict, detail=""):
        return Outcome(case, verdict, code, peak_mb, stderr, detail)

    changed = [str(p) for p, old in before.items() if snapshot(p) != old]
    if changed:
        return outcome("replaced", f"modified: {changed}")
    if "Traceback" in stderr or "Warning" in stderr or "warnings.warn" in stderr:
        return outcome("traceback", lines[-1] if lines else "")
    if temporaries:
        return outcome("partial", f"temporaries left: {[p.name for p in temporaries]}")
    if existing and len(existing) != len(case.outputs) and case.expect != "batch-fail":
        return outcome("partial", f"{len(existing)} of {len(case.outputs)} outputs")
    if case.expect in ("error", "fail"):
        wanted = 2 if case.expect == "error" else 1
        if code == 0:
            return outcome("silent", "exit 0 where an error was due")
        if existing and case.outputs and not any(before.get(p) for p in existing):
            return outcome("silent", f"outputs written by a failed run: {[p.name for p in existing]}")
        if code != wanted:
            return outcome("traceback", f"exit {code}")
        if len(lines) != 1 or not lines[0].startswith("softseg: error: "):
            return outcome("traceback", f"{len(lines)} lines on stderr")
        if peak_mb > BAD_INPUT_RSS_MB:
            return outcome("memory", f"{peak_mb:.0f} MB")
    elif case.expect == "stop":
        if code not in (0, 128 + case.signum, 130, -case.signum):  # -N: killed before Python handled signals
            return outcome("traceback", f"exit {code}")
        if code == 0 and len(existing) != len(case.outputs):
            return outcome("silent", "exit 0 without every output")
        late = [p.name for p in existing if p.stat().st_mtime_ns >= (case.signalled_ns or 0)]
        if code != 0 and late:  # outputs all committed before the signal (a 1 s csa on a loaded machine) are kept
            return outcome("partial", f"stopped but wrote {late} after the stop")
        if len(lines) > 1:
            return outcome("traceback", f"{len(lines)} lines on stderr")
    elif case.expect in ("ok", "batch-fail"):
        if code != (0 if case.expect == "ok" else 1):
            return outcome("silent" if code == 0 else "traceback", f"exit {code}: {lines[-1] if lines else ''}")
        missing = [p.name for p in case.outputs if not p.exists()]
        if missing:
            return outcome("partial", f"missing {missing}")
        unreadable = unreadable_outputs(case.outputs)
        if unreadable:
            return outcome("silent", f"unreadable: {unreadable}")
    if case.then is not None:
        problem = case.then(case)
        if problem:
            return outcome("partial", problem)
    return outcome("handled", lines[-1] if lines else f"exit {code}")


def unreadable_outputs(paths) -> List[str]:
    import nibabel as nib

    bad = []
    for path in paths:
        try:
            if path.name.endswith((".nii.gz", ".nii")):
                data = np.asarray(nib.load(str(path)).dataobj)
                assert np.isfinite(data).all()
            elif path.suffix == ".csv":
                assert path.read_text().startswith(("slice,", "level,"))
            elif path.suffix == ".png":
                assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        except Exception:  # noqa: BLE001
            bad.append(path.name)
    return bad


VERDICTS = ("handled", "traceback", "partial", "replaced", "silent", "memory")


def print_table(outcomes: List[Outcome], disks: Disks) -> None:
    groups: Dict[str, Dict[str, int]] = {}
    for outcome in outcomes:
        row = groups.setdefault(outcome.case.group, dict.fromkeys(VERDICTS, 0))
        row[outcome.verdict] += 1
    header = f"{'group':<20} {'tried':>5} " + " ".join(f"{v:>9}" for v in VERDICTS) + f" {'peak MB':>8}"
    print(header)
    print("-" * len(header))
    for group, row in groups.items():
        peak = max(o.peak_mb for o in outcomes if o.case.group == group)
        print(f"{group:<20} {sum(row.values()):>5} " + " ".join(f"{row[v]:>9}" for v in VERDICTS) + f" {peak:>8.0f}")
    print()
    problems = [o for o in outcomes if o.verdict != "handled"]
    for o in problems:
        print(f"{o.verdict.upper():>9}: {o.case.name}: {o.detail}")
        print(textwrap.indent(o.stderr.strip()[-1500:], "           | "))
    bad_input_peak = max((o.peak_mb for o in outcomes if o.case.expect == "error"), default=0)
    count = {v: sum(o.verdict == v for o in outcomes) for v in VERDICTS}
    print(f"disk full by {'tmpfs mounts' if disks.tmpfs else 'RLIMIT_FSIZE (mount -t tmpfs not permitted here)'}; "
          f"every case under RLIMIT_AS {MEMORY_LIMIT >> 30} GB; largest peak of a bad-input run {bad_input_peak:.0f} MB "
          f"({count['memory']} over {BAD_INPUT_RSS_MB} MB)")
    print(f"{len(outcomes)} tried: {count['handled']} handled ({count['traceback']} tracebacks, {count['partial']} partial "
          f"outputs, {count['replaced']} replaced files, {count['silent']} silent wrong outputs)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="run only the cases whose name or group contains this")
    parser.add_argument("--jobs", type=int, default=2, help="cases run at once (default 2)")
    parser.add_argument("--keep", help="work in this folder and keep it (default: a temporary folder)")
    parser.add_argument("--list", action="store_true", help="list the cases and stop")
    args = parser.parse_args(argv)
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="softseg-faults-"))
    root.mkdir(parents=True, exist_ok=True)
    disks = Disks(root)
    try:
        started = time.time()
        inputs = make_inputs(root)
        models = make_model_dirs(root)
        cases = build_cases(root, inputs, models, disks)
        if args.only:
            cases = [c for c in cases if args.only.lower() in (c.name + " " + c.group).lower()]
        if args.list:
            for case in cases:
                print(f"{case.group:<20} {case.name}")
            return 0
        batch = [c for c in cases if c.group == "batch"]  # in order: the rerun follows the first run
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            outcomes = list(pool.map(run_case, [c for c in cases if c.group != "batch"]))
        outcomes += [run_case(c) for c in batch]
        order = {id(c): i for i, c in enumerate(cases)}
        outcomes.sort(key=lambda o: order[id(o.case)])
        print_table(outcomes, disks)
        print(f"({time.time() - started:.0f} s)", file=sys.stderr)
        return 0 if all(o.verdict == "handled" for o in outcomes) else 1
    finally:
        disks.close()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
