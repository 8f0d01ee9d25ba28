"""The jobs behind `softseg segment` / `softseg csa` (and each image of `softseg batch`), Slicer-free."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Tuple

import numpy as np

from .errors import InputError, ModelNotInstalledError, OutputError
from .io import (all_or_none, check_same_grid, check_writable, file_format, load_labels, load_mask, load_volume,
                 orientation_note, quiet_warnings, refuse_folder, save_like)
from .discs import load_disc_points
from .morphometry import CsaTable, Table, compute_csa
from .sctcsv import check_csa_format

Progress = Optional[Callable[[float, str], None]]


@dataclass
class SegmentResult:
    probability_path: Path
    mask_path: Optional[Path]
    csa_path: Optional[Path]
    plot_path: Optional[Path]
    qc_path: Optional[Path]
    table: CsaTable
    note: str = ""  # a warning to show beside the result (inference.low_confidence_note)
    labelling: object = None  # vertebrae.DiscLabelling with levels="auto"


@dataclass
class MeasureResult:
    csa_path: Path
    plot_path: Optional[Path]
    table: CsaTable  # per slice
    written: Table  # what went into the CSV: the per-slice table, or its per-level / range summary
    labelling: object = None  # vertebrae.DiscLabelling with levels_path="auto"


def _report(progress: Progress, fraction: float, message: str) -> None:
    if progress is not None:
        progress(fraction, message)


@contextlib.contextmanager
def _about(path, *others):
    """Bad-input errors raised inside name `path` (the library's own checks do not know the file), unless they
    name it or one of the `others` files already."""
    try:
        yield
    except (ModelNotInstalledError, OutputError):  # about the model or an output, not the input
        raise
    except InputError as error:
        if any(str(error).startswith(f"{name}:") for name in (path, *others) if name is not None):
            raise
        raise InputError(f"{path}: {error}") from None


def _check_outputs(inputs, outputs) -> None:
    """Refuse to overwrite an input, to write two outputs to one file, to write onto a folder or where nothing can
    be written, before any work."""
    given = [Path(path) for path in outputs if path is not None]
    for path in given:
        refuse_folder(path)
        check_writable(path)
    resolved = [path.resolve() for path in given]
    for n, path in enumerate(resolved):
        if path in resolved[:n]:
            raise InputError(f"{given[n]}: given for two outputs; give each output its own file name")
    for source in inputs:
        if source is not None and Path(source).resolve() in resolved:
            raise InputError(f"{source}: an output would overwrite this input; choose another output name")


def _check_output_types(images=(), pictures=(), tables=()) -> None:
    """Refuse, before any work, image outputs that are neither NIfTI nor single-file NRRD, pictures that are
    not PNG and tables that are not CSV (the file would not hold what its name says)."""
    for path in (p for p in images if p is not None):
        file_format(path)
        if str(path).lower().endswith(".nhdr"):
            raise InputError(f"{path}: write NRRD outputs as .nrrd (one file); a .nhdr header needs a data file beside it")
    for path in (p for p in pictures if p is not None):
        if not str(path).lower().endswith(".png"):
            raise InputError(f"{path}: pictures are written as PNG: name the file .png")
    for path in (p for p in tables if p is not None):
        if not str(path).lower().endswith(".csv"):
            raise InputError(f"{path}: CSA tables are written as CSV: name the file .csv")


def segment_file(image_path, output_path, *, mask_path=None, threshold=0.5, csa_path=None, plot_path=None,
                 qc_path=None, device="auto", volume_index=None, volume_index_4d_only=False, largest_component=True,
                 discs_path=None, csa_format="default", sct_csa_path=None, progress: Progress = None,
                 reference=None, levels: Optional[str] = None, discs_out_path=None, levels_qc_path=None,
                 both_polarities=True) -> SegmentResult:
    """Segment one image: soft cord probability (float32, the image's grid), optional binary mask, CSA CSV,
    CSA plot (with the known CSA drawn on it when `reference`, a plot.CsaReference, is given) and QC mosaic;
    `discs_path`, a disc label file, gives each row of the CSA table its vertebral level. With `levels="auto"`
    the discs are found in the image instead (vertebrae.detect_discs), written as disc labels to
    `discs_out_path` and drawn on a sagittal picture at `levels_qc_path`. `csa_format` "sct" writes the table
    in SCT's layout (sctcsv.py), `sct_csa_path` also writes that layout beside `csa_path`.
    volume_index picks a 4D image's volume; with volume_index_4d_only a 3D image ignores it (batch).
    Raises InputError (incl. ModelNotInstalledError) on bad input."""
    from . import inference

    if not 0.0 < float(threshold) < 1.0:
        raise InputError(f"--threshold must be between 0 and 1 (exclusive), not {threshold}")
    check_csa_format(csa_format)
    _check_levels_options(levels, discs_path, discs_out_path, levels_qc_path)
    _check_outputs([image_path, discs_path], [output_path, mask_path, csa_path, sct_csa_path, plot_path, qc_path,
                                              discs_out_path, levels_qc_path])
    _check_output_types(images=[output_path, mask_path, discs_out_path], pictures=[plot_path, qc_path, levels_qc_path],
                        tables=[csa_path, sct_csa_path])
    if csa_format != "default" and csa_path is None:
        raise InputError(f"--format {csa_format} is the layout of the CSA table: also pass --csa CSA.csv")
    if discs_path is not None and csa_path is None and plot_path is None:
        raise InputError("--discs gives the levels of the CSA table: also pass --csa CSA.csv")
    with all_or_none(), quiet_warnings(), _about(image_path, discs_path):  # every output, or none of them
        _report(progress, 0.0, "loading the image")
        volume = load_volume(image_path, volume_index, index_4d_only=volume_index_4d_only)
        discs = None if discs_path is None else load_disc_points(discs_path)  # a bad file fails before the model runs

        def segmentation_progress(fraction: float, message: str) -> None:
            _report(progress, 0.05 + 0.8 * fraction, message)

        probability = inference.segment_image(volume.array, volume.affine, device=device,
                                              largest_component=largest_component, progress=segmentation_progress,
                                              both_polarities=both_polarities)
        probability = np.clip(np.asarray(probability, dtype=np.float32), 0.0, 1.0)
        _report(progress, 0.85, "writing the probability map")
        save_like(probability, volume, output_path, dtype=np.float32)
        if mask_path is not None:
            save_like(probability >= threshold, volume, mask_path, dtype=np.uint8)
        if qc_path is not None:  # drawn before measuring: a QC mosaic also shows why no cord was found
            from .qc import qc_mosaic

            _report(progress, 0.86, "drawing the QC mosaic")
            picked = "" if volume.volume_index is None else f", volume {volume.volume_index}"
            qc_mosaic(volume.array, probability, volume.affine, qc_path,
                      title=f"{Path(image_path).name}{picked}: soft cord segmentation")
        labelling = None
        if levels == "auto":
            _report(progress, 0.88, "finding the vertebral discs")
            labelling = label_discs(volume, probability, discs_out_path, levels_qc_path, Path(image_path).name)
            discs = labelling.level_points() if labelling.ok else None
        table = None
        if csa_path is not None or sct_csa_path is not None or plot_path is not None:
            if not inference.cord_found(probability):
                raise InputError(f"{image_path}: {inference.NO_CORD}, so no CSA can be measured")
            _report(progress, 0.9, "measuring the cord")
            table = compute_csa(probability, volume.affine, discs=discs)
            if csa_path is not None:
                write_table(table, csa_path, csa_format, output_path)
            if sct_csa_path is not None:
                write_table(table, sct_csa_path, "sct", output_path)
            if plot_path is not None:
                from .plot import plot_csa

                plot_csa(table, plot_path, title=f"CSA of {Path(image_path).name}", reference=reference)
    _report(progress, 1.0, "done")
    return SegmentResult(
        probability_path=Path(output_path), mask_path=_path(mask_path), csa_path=_path(csa_path),
        plot_path=_path(plot_path), qc_path=_path(qc_path), table=table,
        note="; ".join(filter(None, [orientation_note(volume), inference.low_confidence_note(probability, volume.affine)])),
        labelling=labelling,
    )


def _check_levels_options(levels, discs_path, discs_out_path, levels_qc_path) -> None:
    if levels not in (None, "auto"):
        raise InputError(f"--levels must be 'auto' here, not {levels!r}")
    if levels is None and (discs_out_path is not None or levels_qc_path is not None):
        raise InputError("--discs-out and --levels-qc need --levels auto")
    if levels is not None and discs_path is not None:
        raise InputError("give the discs either as --discs or find them with --levels auto, not both")


def label_discs(volume, probability, discs_out_path=None, levels_qc_path=None, name: str = ""):
    """Find the discs (vertebrae.detect_discs); write the disc label image (only when they were numbered) and
    the sagittal QC picture (always: it also shows why not)."""
    from .vertebrae import detect_discs, disc_label_image, levels_qc_picture

    labelling = detect_discs(volume.array, volume.affine, probability)
    if discs_out_path is not None and labelling.ok:
        save_like(disc_label_image(labelling, volume.array.shape, volume.affine), volume, discs_out_path, dtype=np.uint8)
    if levels_qc_path is not None:
        levels_qc_picture(volume.array, volume.affine, labelling, levels_qc_path, title=name)
    return labelling


def write_table(table: Table, path, csa_format: str, measured_path) -> None:
    """Write a CSA table (per slice or a summary) in our layout or in SCT's (naming the file measured)."""
    if csa_format == "sct":
        from .sctcsv import write_sct_csv

        write_sct_csv(table, path, str(measured_path))
    else:
        table.write_csv(path)


def _path(value) -> Optional[Path]:
    return None if value is None else Path(value)


def measure_file(mask_path, csa_path, levels_path=None, perlevel=False, plot_path=None, *, discs_path=None,
                 csa_format="default", vert: Optional[Tuple[float, float]] = None,
                 slices: Optional[Tuple[float, float]] = None, progress: Progress = None, reference=None,
                 image_path=None, discs_out_path=None, levels_qc_path=None) -> MeasureResult:
    """CSA of a soft or binary cord mask (`softseg csa`).

    The CSV holds one row per slice; with `perlevel` one row per vertebral level, with `vert` / `slices`
    (inclusive ranges) one row summarising that range (one per level in it with `perlevel`). The levels come
    from a level map on the mask's grid (`levels_path`) or from disc labels (`discs_path`, any grid);
    `levels_path="auto"` finds the discs in `image_path`, the image the mask belongs to (see segment_file).
    """
    check_csa_format(csa_format)
    auto = levels_path == "auto"
    if auto and image_path is None:
        raise InputError("--levels auto needs the image the mask belongs to: pass --image IMAGE")
    if not auto and (image_path is not None or discs_out_path is not None or levels_qc_path is not None):
        raise InputError("--image, --discs-out and --levels-qc go with --levels auto")
    _check_outputs([mask_path, image_path, discs_path] + ([] if auto else [levels_path]),
                   [csa_path, plot_path, discs_out_path, levels_qc_path])
    _check_output_types(images=[discs_out_path], pictures=[plot_path, levels_qc_path], tables=[csa_path])
    if levels_path is not None and discs_path is not None:
        raise InputError("give the vertebral levels either as --levels or as --discs, not both")
    if (perlevel or vert is not None) and levels_path is None and discs_path is None:
        raise InputError("--perlevel and --vert need the vertebral levels: pass --levels LEVELS (or auto) or --discs DISCS")
    with all_or_none(), quiet_warnings(), _about(mask_path, levels_path, discs_path, image_path):  # all or none
        _report(progress, 0.0, "loading the mask")
        mask = load_mask(mask_path)
        levels = None if levels_path is None or auto else load_labels(levels_path, mask).array
        discs = None if discs_path is None else load_disc_points(discs_path)
        labelling = None
        if auto:
            image = load_volume(image_path)
            check_same_grid(mask, image, "mask")
            _report(progress, 0.1, "finding the vertebral discs")
            labelling = label_discs(image, mask.array, discs_out_path, levels_qc_path, os.path.basename(str(image_path)))
            if not labelling.ok and (perlevel or vert is not None):
                raise InputError(f"no vertebral levels for --perlevel / --vert: {labelling.refusal}")
            discs = labelling.level_points() if labelling.ok else None
        _report(progress, 0.3, "measuring the cord")
        table = compute_csa(mask.array, mask.affine, levels, discs=discs)
        written: Table = table
        if perlevel or vert is not None or slices is not None:
            written = table.summarize(levels=vert, slices=slices, per_level=perlevel)
        write_table(written, csa_path, csa_format, mask_path)
        if plot_path is not None:
            from .plot import plot_csa

            _report(progress, 0.8, "drawing the plot")
            plot_csa(table, plot_path, title=f"CSA of {os.path.basename(str(mask_path))}", reference=reference)
    _report(progress, 1.0, "done")
    return MeasureResult(csa_path=Path(csa_path), plot_path=_path(plot_path), table=table, written=written,
                         labelling=labelling)

