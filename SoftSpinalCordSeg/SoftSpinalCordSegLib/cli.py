"""The `softseg` command line: csa, segment, demo (and batch when its module is present).

Results go to files and a short summary to stdout; progress goes to stderr (silenced by --quiet).
A bad input ends with one line `softseg: error: ...` on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import numpy as np

from . import __version__
from .errors import CancelledError, InputError
from .morphometry import parse_range

PROG = "softseg"


class StderrProgress:
    """progress(fraction, message) callback printing one line per new message on stderr."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.last = None

    def __call__(self, fraction: float, message: str) -> None:
        if self.quiet or message == self.last:
            return
        self.last = message
        print(f"{PROG}: [{fraction:4.0%}] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ csa
def add_csa_parser(subparsers, common) -> None:
    parser = subparsers.add_parser(
        "csa", parents=[common], help="angle-corrected cord CSA and shape per axial slice of a cord mask",
        description="Measure the cord cross-sectional area (angle-corrected, as SCT's sct_process_segmentation) "
                    "and shape per axial slice of a soft (0..1) or binary cord mask (NIfTI or NRRD).",
    )
    parser.add_argument("mask", metavar="MASK", help="cord mask, soft or binary")
    parser.add_argument("--output", "-o", required=True, metavar="CSA.csv", help="CSV to write")
    parser.add_argument("--levels", metavar="LEVELS", help="vertebral level map on the mask's grid (1=C1, 2=C2, ... as PAM50_levels)")
    parser.add_argument("--perlevel", action="store_true", help="one row per vertebral level (mean, SD, number of slices)")
    parser.add_argument("--vert", metavar="LOW:HIGH", help="summarise the levels LOW..HIGH, e.g. 2:3 for C2-C3 (needs --levels)")
    parser.add_argument("--slices", metavar="LOW:HIGH", help="summarise the slice indices LOW..HIGH of the file's grid (as SCT's -z)")
    parser.add_argument("--plot", metavar="CSA.png", help="also write a plot of CSA along the cord")
    parser.set_defaults(func=run_csa)


def run_csa(args) -> int:
    from .pipeline import measure_file

    vert = None if args.vert is None else tuple(int(v) for v in parse_range(args.vert, "--vert"))
    slices = None if args.slices is None else tuple(int(v) for v in parse_range(args.slices, "--slices"))
    result = measure_file(args.mask, args.output, levels_path=args.levels, perlevel=args.perlevel,
                          plot_path=args.plot, vert=vert, slices=slices, progress=StderrProgress(args.quiet))
    if not args.quiet:
        print_summary(result.table)
        print(f"wrote {result.csa_path}" + (f" and {result.plot_path}" if result.plot_path else ""))
    return 0


def print_summary(table) -> None:
    """A few lines: slices measured, CSA mean/SD/range, angles, and per level when levels are known."""
    from .plot import level_name

    csa = table.column("csa_mm2")
    z = table.column("z_mm")
    print(f"{len(table)} slices with cord from z = {z.min():.1f} to {z.max():.1f} mm")
    print(f"CSA: mean {csa.mean():.2f} mm², SD {csa.std(ddof=1) if csa.size > 1 else 0:.2f}, "
          f"range {csa.min():.2f} to {csa.max():.2f}")
    ap, rl = np.abs(table.column("angle_ap_deg")), np.abs(table.column("angle_rl_deg"))
    print(f"centreline angle from S: AP up to {ap.max():.1f}°, RL up to {rl.max():.1f}°")
    if any(row["level"] is not None for row in table.rows):
        for row in table.summarize(per_level=True).rows:
            print(f"  {level_name(row['level']):>4}: CSA {row['csa_mm2_mean']:.2f} ± "
                  f"{row['csa_mm2_sd']:.2f} mm² over {row['n_slices']} slices")


# ------------------------------------------------------------------------------------------------ segment
def add_segment_parser(subparsers, common) -> None:
    parser = subparsers.add_parser(
        "segment", parents=[common], help="soft cord segmentation of an MRI volume (any contrast), optionally with CSA",
        description="Segment the spinal cord of a 3D MRI volume (NIfTI or NRRD, any contrast and orientation) "
                    "into a soft (0..1) probability map written in the image's own grid.",
    )
    parser.add_argument("image", metavar="IMAGE", help="3D image (for a 4D series, see --volume)")
    parser.add_argument("--output", "-o", required=True, metavar="PROB.nii.gz", help="soft segmentation to write (float32)")
    parser.add_argument("--mask", metavar="MASK.nii.gz", help="also write the binary mask (probability >= threshold)")
    parser.add_argument("--threshold", type=float, default=0.5, help="threshold of the binary mask (default 0.5)")
    parser.add_argument("--csa", metavar="CSA.csv", help="also write the per-slice CSA table of the soft segmentation")
    parser.add_argument("--plot", metavar="CSA.png", help="also write the CSA plot")
    parser.add_argument("--qc", metavar="QC.png", help="also write a QC mosaic of axial slices with the overlay")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where the model runs (default auto)")
    parser.add_argument("--volume", type=int, metavar="N", help="for a 4D image: segment its volume N (0-based)")
    parser.add_argument("--keep-all-components", action="store_true", help="keep every connected component (default: the largest)")
    parser.set_defaults(func=run_segment)


def run_segment(args) -> int:
    from .pipeline import segment_file

    result = segment_file(
        args.image, args.output, mask_path=args.mask, threshold=args.threshold, csa_path=args.csa,
        plot_path=args.plot, qc_path=args.qc, device=args.device, volume_index=args.volume,
        largest_component=not args.keep_all_components, progress=StderrProgress(args.quiet),
    )
    if not args.quiet:
        if result.table is not None:
            print_summary(result.table)
        written = [result.probability_path, result.mask_path, result.csa_path, result.plot_path, result.qc_path]
        print("wrote " + ", ".join(str(path) for path in written if path is not None))
    return 0


# ------------------------------------------------------------------------------------------------ demo
@dataclass
class DemoInput:
    mask_path: Path
    phantom: object  # phantom.CordPhantom, the known truth
    description: str


def make_demo_input(output_dir) -> DemoInput:
    """Write the demo's cord mask: a curved, tilted elliptic cord of known CSA, stored LPS (no download)."""
    from .io import Volume, save_like
    from .phantom import CordPhantom, make_phantom_mask

    phantom = CordPhantom(area_mm2=80.0, tilt_rl_deg=20.0, curve_radius_mm=80.0, length_mm=60.0)
    mask, affine = make_phantom_mask(phantom, spacing=(0.8, 0.8, 0.8), axcodes="LPS")
    mask_path = Path(output_dir) / "demo_cord_mask.nii.gz"
    save_like(mask, Volume(array=mask, affine=affine), mask_path)
    description = (f"elliptic cord of true cross-section {phantom.area_mm2:g} mm², bent in the sagittal plane "
                   f"(radius {phantom.curve_radius_mm:g} mm) and tilted {phantom.tilt_rl_deg:g}° towards R, "
                   "exact partial-volume soft mask, 0.8 mm voxels stored LPS")
    return DemoInput(mask_path=mask_path, phantom=phantom, description=description)


def run_demo(output_dir, quiet: bool = False):
    """Measure the demo cord and compare with the truth; returns the MeasureResult."""
    from .phantom import is_interior
    from .pipeline import measure_file

    output_dir = Path(output_dir)
    progress = StderrProgress(quiet)
    progress(0.0, "building the demo phantom")
    demo = make_demo_input(output_dir)
    truth = demo.phantom.area_mm2
    result = measure_file(demo.mask_path, output_dir / "demo_csa.csv", plot_path=output_dir / "demo_csa.png",
                          progress=progress, truth_mm2=truth)
    if not quiet:
        print(f"demo input: {demo.description}")
        print_summary(result.table)
        interior = is_interior(demo.phantom, result.table.column("z_mm"), margin_mm=10.0)
        error = (result.table.column("csa_mm2")[interior] - truth) / truth * 100
        print(f"vs truth {truth:g} mm² on {interior.sum()} interior slices: mean error {error.mean():+.2f}%, "
              f"largest {np.abs(error).max():.2f}%")
        print(f"wrote {demo.mask_path}, {result.csa_path} and {result.plot_path}")
    return result


def add_demo_parser(subparsers, common) -> None:
    parser = subparsers.add_parser(
        "demo", parents=[common], help="run on a built-in example (no download) and compare with the known truth",
        description="Build a synthetic cord of known cross-section, measure it as `softseg csa` does, print the "
                    "summary against the truth and write the mask, the CSA table and the plot.",
    )
    parser.add_argument("--output-dir", default="softseg_demo", metavar="DIR", help="where to write (default ./softseg_demo)")
    parser.set_defaults(func=run_demo_command)


def run_demo_command(args) -> int:
    run_demo(args.output_dir, args.quiet)
    return 0


# ------------------------------------------------------------------------------------------------ main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Soft spinal-cord segmentation and angle-corrected cord CSA (SoftSpinalCordSeg).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", "-q", action="store_true", help="no progress or summary output")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_csa_parser(subparsers, common)
    add_segment_parser(subparsers, common)
    add_demo_parser(subparsers, common)
    # Optional commands register themselves: a module with add_parser(subparsers) setting `func`.
    for name in ("batch",):
        if importlib.util.find_spec(f"{__package__}.{name}") is not None:
            importlib.import_module(f"{__package__}.{name}").add_parser(subparsers)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_request:  # --help, --version, usage errors: argparse already printed
        return int(exit_request.code or 0)
    try:
        return int(args.func(args) or 0)
    except InputError as error:
        message = " ".join(str(error).split())
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2
    except OSError as error:  # disk full, permission denied, ...: the system's own words, on one line
        print(f"{PROG}: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    except (CancelledError, KeyboardInterrupt):
        print(f"{PROG}: cancelled", file=sys.stderr)
        return 130
