"""The `softseg` command line: csa, segment, demo and batch.

Results go to files and a short summary to stdout; progress goes to stderr (silenced by --quiet).
A bad input ends with one line `softseg: error: ...` on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from . import __version__
from .errors import CancelledError, InputError, Interrupted, OutputError, describe_os_error, stop_signals
from .morphometry import OVERSIZED_CSA_MM2, STEEP_ANGLE_DEG, SUSPECT_TOLERANCE, SUSPECT_WINDOW_MM, parse_range
from .sctcsv import CSA_FORMATS

PROG = "softseg"
FORMAT_HELP = ("CSV layout: default (softseg's columns) or sct (sct_process_segmentation's: Slice (I->S), VertLevel, "
               "MEAN(area), STD(area), ..., SUM(length)); default: default")
DISCS_HELP = ("disc labels (SCT's -discfile: one voxel per disc, value = disc number, 3 = C2/C3, 4 = C3/C4; any grid): "
              "each slice gets the level between the discs around its centre along the centreline")


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
    parser.add_argument("--levels", metavar="LEVELS", help="vertebral level map on the mask's grid (1=C1, 2=C2, ... as PAM50_levels), "
                        "or 'auto' to find the discs in the image given with --image")
    parser.add_argument("--discs", metavar="DISCS", help=DISCS_HELP)
    parser.add_argument("--image", metavar="IMAGE", help="with --levels auto: the image the mask belongs to (sagittal or 3D, showing C2)")
    add_disc_outputs(parser)
    parser.add_argument("--format", choices=CSA_FORMATS, default="default", help=FORMAT_HELP)
    parser.add_argument("--perlevel", action="store_true", help="one row per vertebral level (mean, SD, number of slices)")
    parser.add_argument("--vert", metavar="LOW:HIGH", help="summarise the levels LOW..HIGH, e.g. 2:3 for C2-C3 (needs --levels or --discs)")
    parser.add_argument("--slices", metavar="LOW:HIGH", help="summarise the slice indices LOW..HIGH of the file's grid (SCT's -z; its slice 0 is the inferior one, "
                             "which is also the file's where the slices run upwards, as in RPI/LPI files)")
    parser.add_argument("--plot", metavar="CSA.png", help="also write a plot of CSA along the cord")
    parser.set_defaults(func=run_csa)


def run_csa(args) -> int:
    from .pipeline import measure_file

    vert = None if args.vert is None else parse_range(args.vert, "--vert", lowest=1)
    slices = None if args.slices is None else parse_range(args.slices, "--slices")
    result = measure_file(args.mask, args.output, levels_path=args.levels, discs_path=args.discs, csa_format=args.format,
                          perlevel=args.perlevel, plot_path=args.plot, vert=vert, slices=slices,
                          progress=StderrProgress(args.quiet), image_path=args.image, discs_out_path=args.discs_out,
                          levels_qc_path=args.levels_qc)
    if not args.quiet:
        print_summary(result.table)
        print_levels(result.labelling)
        written = [result.csa_path, result.plot_path, args.levels_qc]
        if result.labelling is not None and result.labelling.ok:
            written.append(args.discs_out)
        print("wrote " + ", ".join(str(path) for path in written if path is not None))
    elif result.labelling is not None and not result.labelling.ok:
        print_levels(result.labelling)
    return 0


def add_disc_outputs(parser) -> None:
    parser.add_argument("--discs-out", metavar="DISCS.nii.gz", help="with --levels auto: write the discs found as SCT "
                        "disc labels (one voxel per disc, value = disc number: 3 = C2/C3, 4 = C3/C4, ...)")
    parser.add_argument("--levels-qc", metavar="LEVELS.png", help="with --levels auto: write a sagittal picture with the discs named")


def print_levels(labelling) -> None:
    """The discs found and the confidence on stdout, or the one-line refusal on stderr."""
    if labelling is None:
        return
    from .vertebrae import describe

    if labelling.ok:
        print(describe(labelling))
    else:
        print(f"{PROG}: warning: {describe(labelling)}; the level column is left empty", file=sys.stderr)


def print_summary(table) -> None:
    """A few lines: slices measured, CSA mean/SD/range, angles, and per level when levels are known."""
    from .plot import level_name

    csa = table.column("csa_mm2")
    z = table.column("z_mm")
    print(f"{len(table)} slices with cord from z = {z.min():.1f} to {z.max():.1f} mm")
    print(f"CSA: mean {csa.mean():.2f} mm², SD {csa.std():.2f}, "
          f"range {csa.min():.2f} to {csa.max():.2f}")
    suspects = table.suspect_slices()
    if suspects:
        print(f"check slices {', '.join(map(str, suspects))} on the QC mosaic: their CSA departs by more than "
              f"{SUSPECT_TOLERANCE:.0%} from that of the slices within {SUSPECT_WINDOW_MM:.0f} mm")
    oversized = table.oversized_slices()
    if oversized:
        print(f"check slices {', '.join(map(str, oversized))} on the QC mosaic: their CSA is over {OVERSIZED_CSA_MM2:.0f} mm², "
              "more than a healthy adult cord's (about 60-90 mm² in the cervical cord): the mask may take in CSF")
    ap, rl = np.abs(table.column("angle_ap_deg")), np.abs(table.column("angle_rl_deg"))
    print(f"centreline angles from the slice normal: about A-P up to {ap.max():.1f}°, about R-L up to {rl.max():.1f}°")
    steep = table.steep_slices()
    if steep:
        print(f"check slices {', '.join(map(str, steep))}: the cord crosses them at over {STEEP_ANGLE_DEG:.0f}° from their "
              "normal: segmented slice by slice (as the model does), the cord there is unreliable or missed; slices "
              "across the cord are better")
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
    parser.add_argument("--discs", metavar="DISCS", help=DISCS_HELP + " (with --csa)")
    parser.add_argument("--levels", choices=("auto",), help="auto: find the vertebral discs in the image and fill the level column of --csa")
    add_disc_outputs(parser)
    parser.add_argument("--format", choices=CSA_FORMATS, default="default", help=FORMAT_HELP + " (of --csa)")
    parser.add_argument("--plot", metavar="CSA.png", help="also write the CSA plot")
    parser.add_argument("--qc", metavar="QC.png", help="also write a QC mosaic of axial slices with the overlay")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where the model runs (default auto)")
    parser.add_argument("--volume", type=int, metavar="N", help="for a 4D image: segment its volume N (0-based)")
    parser.add_argument("--keep-all-components", action="store_true", help="keep every connected component (default: the largest)")
    parser.add_argument("--both-polarities", action=argparse.BooleanOptionalAction, default=True,
                        help="read each slice as it is and with its grey levels inverted, and average (the default: CSA that "
                             "depends less on the contrast); --no-both-polarities reads it once, in half the network time")
    parser.set_defaults(func=run_segment)


def run_segment(args) -> int:
    from .pipeline import segment_file

    result = segment_file(
        args.image, args.output, mask_path=args.mask, threshold=args.threshold, csa_path=args.csa,
        plot_path=args.plot, qc_path=args.qc, device=args.device, volume_index=args.volume,
        largest_component=not args.keep_all_components, discs_path=args.discs, csa_format=args.format,
        progress=StderrProgress(args.quiet), levels=args.levels, discs_out_path=args.discs_out,
        levels_qc_path=args.levels_qc, both_polarities=args.both_polarities,
    )
    if args.quiet:
        if result.labelling is not None and not result.labelling.ok:
            print_levels(result.labelling)
    else:
        if result.table is not None:
            print_summary(result.table)
        print_levels(result.labelling)
        written = [result.probability_path, result.mask_path, result.csa_path, result.plot_path, result.qc_path,
                   args.levels_qc]
        if result.labelling is not None and result.labelling.ok:
            written.append(args.discs_out)
        print("wrote " + ", ".join(str(path) for path in written if path is not None))
        if result.note:
            print(f"{PROG}: warning: {result.note}", file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------------------------ demo
DEMO_SHAPE = (80, 80, 40)  # voxels: a 72 x 72 mm field of view, 36 mm along the cord
DEMO_SPACING_MM = 0.9


@dataclass
class DemoInput:
    image_path: Path  # the T2w-like image
    truth_path: Path  # the cord's exact partial-volume mask
    phantom: object  # phantom.CordPhantom, the known truth
    description: str


# The demo's verdict. The truth is the cross-section up to the cord's intensity edge in the image; on real
# images raters draw the cord about 0.8 mm inside that edge (the model card's measurement on unf01 and sub-05),
# and a model trained on their masks may read anywhere between the two. Accepted: from DEMO_SLACK under the area inside the rater's edge to DEMO_SLACK
# over the truth (noise and the rendered edge's partial volume). Without a model the known mask itself is
# measured: the CSA method alone, exact within MASK_TOLERANCE.
RATER_MARGIN_MM = 0.8
DEMO_SLACK = 0.05
MASK_TOLERANCE = 0.02


@dataclass
class DemoResult:
    table: object  # morphometry.CsaTable of what was measured
    truth_mm2: float  # the phantom's cross-section, up to the cord's edge in the image
    accepted_mm2: Tuple[float, float]  # the range of mean CSA that passes
    written: List[Path]
    no_model: Optional[str] = None  # why no model could run (then the known mask was measured instead)
    rater_margin_mm: float = 0.0  # the model draws the edge this far inside the image's edge (model card)
    inner_mm2: Optional[float] = None  # the cross-section inside that margin, as raters would draw it

    @property
    def segmented(self) -> bool:
        return self.no_model is None

    @property
    def mean_mm2(self) -> float:
        return float(self.table.column("csa_mm2").mean())

    @property
    def passed(self) -> bool:
        low, high = self.accepted_mm2
        return low <= self.mean_mm2 <= high

    def percent_of_truth(self, value: float) -> float:
        return round((value - self.truth_mm2) / self.truth_mm2 * 100, 1) + 0.0  # + 0.0: no "-0.0"

    def verdict(self) -> str:
        """One line: PASS or FAIL, the mean CSA against the truth, and the accepted range."""
        low, high = self.accepted_mm2
        return (f"{'PASS' if self.passed else 'FAIL'}: mean CSA {self.mean_mm2:.2f} mm² = truth "
                f"{self.percent_of_truth(self.mean_mm2):+.1f}%; accepted {low:.1f} to {high:.1f} mm² "
                f"(truth {self.percent_of_truth(low):+.1f}% to {self.percent_of_truth(high):+.1f}%)")


def make_demo_input(output_dir) -> DemoInput:
    """Write the demo's T2w-like image and its cord's exact mask (a tilted elliptic cord of known CSA, no download)."""
    from .io import Volume, reorient, save_like
    from .phantom import CordPhantom, mri_like_image

    # Longer than the field of view: every slice cuts the whole cord. 12 deg AP and 9 deg RL: 15 deg of tilt.
    phantom = CordPhantom(area_mm2=80.0, aspect=1.4, tilt_ap_deg=12.0, tilt_rl_deg=9.0, length_mm=200.0)
    affine = np.diag([DEMO_SPACING_MM] * 3 + [1.0])
    affine[:3, 3] = -(np.array(DEMO_SHAPE) - 1) / 2 * DEMO_SPACING_MM
    image, cord = mri_like_image(phantom, DEMO_SHAPE, affine)
    image, stored_affine = reorient(image, affine, "LPS")
    cord, _ = reorient(cord, affine, "LPS")
    output_dir = Path(output_dir)
    tilt_deg = np.degrees(np.arccos(phantom.rotation[2, 2]))  # between the cord and S
    demo = DemoInput(
        image_path=output_dir / "demo_t2w.nii.gz", truth_path=output_dir / "demo_cord_truth.nii.gz", phantom=phantom,
        description=(f"T2w-like image ({'x'.join(map(str, DEMO_SHAPE))} voxels of {DEMO_SPACING_MM:g} mm, stored LPS) "
                     f"of an elliptic cord of true cross-section {phantom.area_mm2:g} mm², tilted {tilt_deg:.0f}° from S, "
                     "in bright CSF, epidural fat, a bony canal and textured tissue, with noise"),
    )
    save_like(image, Volume(array=image, affine=stored_affine), demo.image_path)
    save_like(cord, Volume(array=cord, affine=stored_affine), demo.truth_path)
    return demo


def run_demo(output_dir, quiet: bool = False, device: str = "auto") -> DemoResult:
    """Segment the demo image with the model (or, with none installed, measure the known cord mask) and
    judge the mean CSA against the truth."""
    from . import inference
    from .errors import DamagedModelError, ModelNotInstalledError
    from .pipeline import measure_file, segment_file
    from .plot import CsaReference

    output_dir = Path(output_dir)
    progress = StderrProgress(quiet)
    try:
        inference.rater_margin_mm()  # a damaged model card stops the demo here, before any file is written
    except DamagedModelError:
        raise
    except ModelNotInstalledError:
        pass  # the known mask is measured below
    progress(0.0, "building the demo image")
    demo = make_demo_input(output_dir)
    truth = demo.phantom.area_mm2
    truth_label = f"truth {truth:g} mm² (up to the cord's edge in the image)"
    outputs = {name: output_dir / f"demo_{name}" for name in ("cord_prob.nii.gz", "cord_mask.nii.gz", "csa.csv",
                                                                "csa.png", "qc.png")}
    try:
        margin = RATER_MARGIN_MM  # the raters' convention, whatever edge a model declares (model.json)
        inner = demo.phantom.area_inside_mm2(margin)
        accepted = (inner * (1 - DEMO_SLACK), truth * (1 + DEMO_SLACK))
        result = segment_file(demo.image_path, outputs["cord_prob.nii.gz"], mask_path=outputs["cord_mask.nii.gz"],
                              csa_path=outputs["csa.csv"], plot_path=outputs["csa.png"], qc_path=outputs["qc.png"],
                              device=device, progress=progress, reference=CsaReference(truth, truth_label, accepted))
        demo_result = DemoResult(result.table, truth, accepted, [demo.image_path, demo.truth_path, *outputs.values()],
                                 rater_margin_mm=margin, inner_mm2=inner)
    except DamagedModelError:
        raise
    except ModelNotInstalledError as error:
        accepted = (truth * (1 - MASK_TOLERANCE), truth * (1 + MASK_TOLERANCE))
        result = measure_file(demo.truth_path, outputs["csa.csv"], plot_path=outputs["csa.png"], progress=progress,
                              reference=CsaReference(truth, truth_label, accepted))
        demo_result = DemoResult(result.table, truth, accepted, [demo.image_path, demo.truth_path, outputs["csa.csv"],
                                                                 outputs["csa.png"]], no_model=" ".join(str(error).split()))
    if not quiet:
        print_demo(demo, demo_result)
    return demo_result


def print_demo(demo: DemoInput, result: DemoResult) -> None:
    print(f"demo input: {demo.description}")
    if result.segmented:
        print("segmented by the model; CSA of its soft segmentation:")
    else:
        print(f"NO MODEL: {result.no_model}. The image was not segmented; measuring the known cord mask instead:")
    print_summary(result.table)
    print("wrote " + ", ".join(str(path) for path in result.written))
    if result.segmented:
        print(f"tolerance: from {DEMO_SLACK:.0%} under {result.inner_mm2:.1f} mm² (the cross-section "
              f"{result.rater_margin_mm:g} mm inside the cord's edge, where raters draw real cords) to "
              f"{DEMO_SLACK:.0%} over the truth, {result.truth_mm2:g} mm² up to the cord's edge in the image")
    else:
        print(f"tolerance: {MASK_TOLERANCE:.0%} either side of the truth, {result.truth_mm2:g} mm² "
              "(the known mask measured: the CSA method alone, not the model)")
    print(result.verdict())


def add_demo_parser(subparsers, common) -> None:
    parser = subparsers.add_parser(
        "demo", parents=[common], help="segment a built-in MRI-like image (no download) and compare with the known truth",
        description="Generate a T2w-like image of a tilted cord of known cross-section, segment it as `softseg "
                    "segment` does (probability, mask, CSA table, plot, QC mosaic) and judge the mean CSA against "
                    "the truth: PASS (exit code 0) or FAIL (1). With no model installed, say so and measure the "
                    "known cord mask instead.",
    )
    parser.add_argument("--output-dir", default="softseg_demo", metavar="DIR", help="where to write (default ./softseg_demo)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where the model runs (default auto)")
    parser.set_defaults(func=run_demo_command)


def run_demo_command(args) -> int:
    return 0 if run_demo(args.output_dir, args.quiet, args.device).passed else 1


# ------------------------------------------------------------------------------------------------ main
class OneLineErrors(argparse.ArgumentParser):
    """A usage error is one line, as every other error (`softseg: error: ...`), with where to find the options
    instead of the whole usage text; the subcommands' parsers are of this class too (add_subparsers)."""

    def error(self, message):
        command = self.prog.split(" ", 1)[1] + " " if " " in self.prog else ""
        self.exit(2, f"{PROG}: error: {message} (see {PROG} {command}--help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrors(
        prog=PROG, description="Soft spinal-cord segmentation and angle-corrected cord CSA (SoftSpinalCordSeg).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", "-q", action="store_true", help="no progress or summary output")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parser.subcommands = subparsers  # its choices: each subcommand's parser
    add_csa_parser(subparsers, common)
    add_segment_parser(subparsers, common)
    add_demo_parser(subparsers, common)
    from .batch import add_parser as add_batch_parser

    add_batch_parser(subparsers)
    return parser


def run() -> None:
    """The `softseg` console command: main(), then a quick exit (inference.exit_process)."""
    from .inference import exit_process

    exit_process(main())


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown:  # said by the subcommand's parser, whose --help lists its options (argparse: the top one's)
            parser.subcommands.choices[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    except SystemExit as exit_request:  # --help, --version, usage errors: argparse already printed
        return int(exit_request.code or 0)
    from .inference import tune_cpu_allocator

    tune_cpu_allocator()
    try:
        with warnings.catch_warnings(), stop_on_signals():
            warnings.simplefilter("ignore")  # what a library warns about is checked and said in the error
            return _run_command(args)
    except Interrupted as stop:  # arrived after the command's own handling: its outputs are complete
        return 128 + stop.signum


def _run_command(args) -> int:
    try:
        return int(args.func(args) or 0)
    except OutputError as error:  # where the user asked to write: exit 1, as a full disk
        _error(str(error))
        return 1
    except InputError as error:
        _error(str(error))
        return 2
    except OSError as error:  # disk full, permission denied, ...: the file and what to do, on one line
        _error(describe_os_error(error))
        return 1
    except MemoryError:
        _error("not enough memory for this image: close other programs, or crop or downsample the image")
        return 1
    except RuntimeError as error:  # torch reports a failed allocation as a RuntimeError
        if "alloc" not in str(error).lower():
            raise
        _error("not enough memory for this image: close other programs, or crop or downsample the image")
        return 1
    except Interrupted as stop:
        print(f"{PROG}: stopped by {signal.Signals(stop.signum).name}; unfinished outputs were removed", file=sys.stderr)
        return 128 + stop.signum
    except (CancelledError, KeyboardInterrupt):
        print(f"{PROG}: cancelled; unfinished outputs were removed", file=sys.stderr)
        return 130


def _error(message: str) -> None:
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)


@contextlib.contextmanager
def stop_on_signals():
    """SIGTERM and SIGHUP unwind the run as Ctrl+C (SIGINT) does, removing the outputs in progress, instead of
    killing it."""
    def interrupt(signum, frame):
        raise Interrupted(signum)

    previous = {}
    for signum in stop_signals():
        if signal.getsignal(signum) is signal.SIG_IGN:
            continue  # an ignored signal (nohup, a background job) stays ignored
        try:
            previous[signum] = signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else interrupt)
        except ValueError:  # not the main thread: leave signals alone
            pass
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
