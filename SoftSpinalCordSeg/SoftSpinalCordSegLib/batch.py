"""`softseg batch`: the `softseg segment` pipeline over a whole cohort, distributed with Dask.

The client (this process) finds the images, skips those whose outputs are already there, sends the rest to
Dask workers (a local cluster of N processes, or an existing scheduler), then aggregates every per-image CSA
table into cohort CSVs and a self-contained HTML report. Each worker process keeps its own model in memory
(inference caches it per process), so the weights are loaded once per worker, not once per image.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import resource
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from . import __version__
from .bids import FAILURES_FILE, INPUTS_FILE, REPORT_FILE, SPREAD_FILE, SUMMARY_FILE, SourceImage, default_output_dir, discover
from .errors import DeviceError, InputError, ModelNotInstalledError, OutputError, describe_os_error, stop_signals
from .report import write_cohort_outputs
from .sctcsv import CSA_FORMATS, check_csa_format
from .vertebrae import describe as describe_levels

DEFAULT_WORKERS = 2
# Bumped where the same weights and options give other masks (4: zeros along a slice's edge are outside the field).
READING_REVISION = 4
OPTIONS_BEFORE_RECORDED = {"both_polarities": False, "reading": 1}  # how runs recorded without the option (or before it) read
RESULT_OPTIONS = ("threshold", "largest_component", "volume_index", "levels", "discs", "both_polarities", "reading")  # options that change the outputs: a change redoes every image


@dataclass
class ImageResult:
    """What happened to one image: status is 'done', 'skipped' (outputs up to date) or 'failed'."""

    image: SourceImage
    status: str
    reason: str = ""
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    worker: str = ""
    outputs: Dict[str, str] = field(default_factory=dict)
    bad_input: bool = False  # failed because of the file itself: not retried until the file changes
    note: str = ""  # segment's warning (an unsure cord, a header without orientation) and why no levels: "" if failed
    from_record: bool = False  # such a failure recorded by an earlier run, the file unchanged since: not tried again

    @property
    def why(self) -> str:
        return self.reason + (" (unchanged since it failed: not tried again)" if self.from_record else "")


@dataclass
class BatchResult:
    output_dir: Path
    results: List[ImageResult]
    summary_csv: Path
    spread_csv: Path
    report_html: Path
    seconds: float

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def failures(self) -> List[ImageResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def warnings(self) -> List[ImageResult]:
        return [r for r in self.results if r.note]


def default_segment_file():
    from .pipeline import segment_file

    return segment_file


# --------------------------------------------------------------------------------------------- worker side
def process_image(image: SourceImage, outputs: Dict[str, str], segment_file: Callable, options: dict) -> dict:
    """Run the per-image pipeline on a worker; a bad input comes back as a failure instead of an exception.

    A ModelNotInstalledError comes back with status 'model': it concerns every image, so the client stops the
    whole batch.
    """
    start = time.perf_counter()
    reason, bad_input, note = "", False, ""
    try:
        segmented = segment_file(
            image.path,
            outputs["probseg"],
            mask_path=outputs["mask"],
            csa_path=outputs["csa"],
            qc_path=outputs["qc"],
            **({"sct_csa_path": outputs["csa_sct"]} if "csa_sct" in outputs else {}),
            **({"levels_qc_path": outputs["levels_qc"]} if "levels_qc" in outputs else {}),
            **options,
        )
        labelling = getattr(segmented, "labelling", None)  # --levels auto: why an image has no level rows
        refusal = "" if labelling is None or labelling.ok else describe_levels(labelling)
        note = "; ".join(filter(None, [getattr(segmented, "note", ""), refusal]))
    except ModelNotInstalledError as error:  # returned, not raised: Dask would log a traceback
        return {"status": "model", "reason": str(error)}
    except InputError as error:
        # The file is named beside the reason everywhere: drop it from the front of the message.
        reason, bad_input = str(error).split(f"{image.path}: ", 1)[-1], not isinstance(error, (OutputError, DeviceError))
    except OSError as error:  # a full disk, no permission: the file and what to do, as `segment` says it
        reason = describe_os_error(error)
    except Exception as error:  # noqa: BLE001 - one broken image must not stop the cohort
        reason = f"{type(error).__name__}: {error}"
    if reason:
        # Each output is written atomically, but an incomplete set would look half done: remove it.
        for path in outputs.values():
            with contextlib.suppress(OSError):  # also where a file stands in for the output's folder
                Path(path).unlink(missing_ok=True)
        _remove_empty_folders(Path(outputs["probseg"]).parent, len(Path(image.output_dir).parts))
    return {
        "status": "failed" if reason else "done",
        "reason": reason,
        "bad_input": bad_input,
        "note": note,
        "seconds": time.perf_counter() - start,
        "peak_rss_mb": peak_rss_mb(),
        "worker": f"{os.uname().nodename}:{os.getpid()}",
    }


def remove_stale_outputs(output_dir: Path) -> None:
    """Remove the temporaries that interrupted runs (a killed worker, a stopped batch) left in the derivatives."""
    from .io import remove_stale_temporaries

    for folder in {candidate.parent for candidate in output_dir.rglob(".*.tmp*")}:
        remove_stale_temporaries(folder)


def _remove_empty_folders(folder: Path, depth: int) -> None:
    """Remove folder and up to depth-1 of its parents, as long as they are empty."""
    for candidate in [folder, *folder.parents][:depth]:
        try:
            candidate.rmdir()
        except OSError:
            return


def peak_rss_mb() -> float:
    """Peak resident memory of this process (ru_maxrss is kB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


# --------------------------------------------------------------------------------------------- client side
def outputs_up_to_date(image: SourceImage, outputs: Dict[str, Path], options_since_ns: int = 0) -> bool:
    """All outputs exist and none is older than the image (outputs are atomic, so existing means complete) or
    than options_since_ns, when the recorded options took effect. False where the image itself is gone:
    segmenting it then reports it as a failure of its own."""
    try:
        oldest_valid = max(os.stat(image.path).st_mtime_ns, options_since_ns)
        return all(os.stat(p).st_mtime_ns >= oldest_valid for p in outputs.values())
    except OSError:
        return False


def _file_signature(path) -> str:
    status = os.stat(path)
    return f"{status.st_size}:{status.st_mtime_ns}"


def _read_tsv(path: Path) -> Dict[str, dict]:
    """The rows of one of batch's TSV records, keyed by their image path ({} where there is none)."""
    if not path.is_file():
        return {}
    with open(path, newline="") as handle:
        return {row["file"]: row for row in csv.DictReader(handle, delimiter="\t")}


def read_known_failures(output_dir: Path) -> Dict[str, dict]:
    """Failures recorded by the previous run, keyed by image path."""
    return _read_tsv(output_dir / FAILURES_FILE)


def read_input_signatures(output_dir: Path) -> Dict[str, dict]:
    """Size and time of each image when its outputs were last found up to date (its "signature"), keyed by
    image path."""
    return _read_tsv(output_dir / INPUTS_FILE)


def unchanged_since_recorded(path: str, recorded: Dict[str, dict]) -> bool:
    """True where the image has the size and time recorded with its outputs (or none was recorded): a file
    replaced by another with an older time (cp -p, rsync -a) escapes the outputs' newer-than-the-image test."""
    try:
        return path not in recorded or recorded[path]["signature"] == _file_signature(path)
    except OSError:
        return False


def write_input_signatures(output_dir: Path, results: Sequence[ImageResult], earlier: Dict[str, dict]) -> Path:
    """The signature of each image whose outputs are up to date after this run (and segment's warning about them,
    kept for the runs that skip it), and those of `earlier` (read before it) of images still there that this run
    left out (--include)."""
    rows = [{"note": "", **row} for row in _left_out(earlier, results)]  # (no note in records of older versions)
    for result in results:
        if result.status in ("done", "skipped"):
            with contextlib.suppress(OSError):  # gone since: no record, its outputs are judged again next time
                rows.append({"file": result.image.path, "signature": _file_signature(result.image.path),
                             "note": result.note})
    path = output_dir / INPUTS_FILE
    write_atomically(path, _tsv(rows, ["file", "signature", "note"]))
    return path


def _left_out(recorded: Dict[str, dict], results: Sequence[ImageResult]) -> List[dict]:
    """The recorded rows of images still there that this run left out (--include), paths compared resolved."""
    this_run = {os.path.realpath(result.image.path) for result in results}
    return [row for path, row in recorded.items() if os.path.realpath(path) not in this_run and os.path.exists(path)]


def write_failures(output_dir: Path, results: Sequence[ImageResult], earlier: Dict[str, dict]) -> Path:
    """The failures of this run, and `earlier` ones (read before it, under the same options) of images still
    there that this run left out; those caused by the input itself are not retried until the file changes."""
    rows = _left_out(earlier, results)
    for result in results:
        if result.status != "failed":
            continue
        try:
            signature = _file_signature(result.image.path) if result.bad_input else ""
        except OSError:
            signature = ""
        rows.append({"file": result.image.path, "reason": result.reason, "signature": signature})
    path = output_dir / FAILURES_FILE
    write_atomically(path, _tsv(rows, ["file", "reason", "signature"]))
    return path


def _tsv(rows, columns) -> str:
    lines = ["\t".join(columns)]
    for row in rows:
        lines.append("\t".join(str(row[c]).replace("\t", " ").replace("\n", " ") for c in columns))
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, text: str) -> None:
    """Write text to a temporary file beside path, then rename it over path."""
    from .io import atomic_path

    with atomic_path(path) as temporary:
        temporary.write_text(text)


def installed_model_sha256() -> str:
    """SHA-256 of the installed weights, as recorded beside them ('' when no model is installed)."""
    from . import inference

    try:
        return inference.recorded_sha256(inference.model_dir() / inference.WEIGHTS_NAME)
    except ModelNotInstalledError:
        return ""


def _option(options: dict, key: str):
    """An option's value, where absent or null (recorded before it was) the value those runs used."""
    value = options.get(key)
    return OPTIONS_BEFORE_RECORDED.get(key) if value is None else value


def previous_record(output_dir: Path) -> Optional[dict]:
    """What the last run recorded of itself in dataset_description.json (weights, options); None where nothing is."""
    try:
        generated = json.loads((output_dir / "dataset_description.json").read_text())["GeneratedBy"][0]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None
    return generated if isinstance(generated, dict) else None


def settings_changed(output_dir: Path, model_sha256: str, options: dict) -> str:
    """Why the derivatives in output_dir cannot be kept: made by other weights than those installed now, or
    with other options (threshold, clean-up); "" when they can (or when there was no earlier run)."""
    generated = previous_record(output_dir)
    if generated is None:
        return ""
    previous = generated.get("ModelSHA256", "")
    if previous and model_sha256 and previous != model_sha256:
        return "the model changed since the last run"
    recorded = generated.get("Options")
    if recorded is None:
        return "the last run's options were not recorded"
    changed = sorted(k for k in RESULT_OPTIONS if _option(recorded, k) != _option(options, k))
    changed = [{"volume_index": "--volume", "levels": "--levels", "discs": "--discs", "both_polarities": "--both-polarities",
                "reading": "the segmentation pipeline"}.get(k, k) for k in changed]
    return f"{' and '.join(changed)} changed since the last run" if changed else ""


def options_since_ns(output_dir: Path, changed: str) -> int:
    """When the options of this run took effect, in the output folder's clock: outputs older than that were
    made under other options (or by an interrupted run of other options) and are redone. Where they did not
    change, the time recorded by the run that set them (0 for records from before it was kept); where they
    did, or where nothing was recorded, now."""
    generated = None if changed else previous_record(output_dir)
    if generated is not None:  # (no earlier record: outputs of unknown options are redone)
        with contextlib.suppress(TypeError, ValueError):
            return int(generated.get("OptionsSinceNs") or 0)
    try:
        with tempfile.NamedTemporaryFile(dir=output_dir, prefix=".clock-", suffix=".tmp") as probe:
            return os.fstat(probe.fileno()).st_mtime_ns
    except OSError as error:
        raise OutputError(f"{output_dir}: cannot write the derivatives here ({error.strerror})") from None


def write_dataset_description(output_dir: Path, input_path: Path, model_sha256: str, options: dict,
                              since_ns: int = 0) -> Path:
    path = output_dir / "dataset_description.json"
    description = {
        "Name": "SoftSpinalCordSeg soft spinal-cord segmentation and CSA",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [
            {
                "Name": "softseg",
                "Version": __version__,
                "Description": "contrast-agnostic soft spinal-cord segmentation and angle-corrected CSA (softseg batch)",
                "ModelSHA256": model_sha256,
                "Options": {k: options.get(k) for k in RESULT_OPTIONS},
                "OptionsSinceNs": since_ns,
            }
        ],
        "SourceDatasets": [{"URL": Path(input_path).resolve().as_uri()}],
    }
    write_atomically(path, json.dumps(description, indent=2) + "\n")
    return path


class ProgressBar:
    """One line per finished image on stderr, with a bar of the whole cohort."""

    def __init__(self, total: int, quiet: bool = False, width: int = 24):
        self.total, self.done, self.quiet, self.width = total, 0, quiet, width

    def update(self, result: ImageResult) -> None:
        self.done += 1
        if self.quiet:
            return
        filled = self.width * self.done // max(self.total, 1)
        bar = "#" * filled + "." * (self.width - filled)
        detail = f" ({result.seconds:.1f} s)" if result.status == "done" else ""
        if result.status == "failed":
            detail = f": {result.why}"
        print(f"[{bar}] {self.done}/{self.total} {result.status} {result.image.stem}{detail}", file=sys.stderr, flush=True)


def _distributed():
    """dask.distributed, a dependency of the package; one error line where an environment lacks it."""
    try:
        import dask.distributed
    except ImportError:
        raise InputError("softseg batch needs Dask: pip install 'dask[distributed]>=2024.1'") from None
    return dask.distributed


# Dask's scheduler always serves HTTP (health checks; the dashboard too where bokeh is installed). On a free
# port of this machine only, two batches at once never compete for Dask's default port 8787.
DASHBOARD_ADDRESS = "127.0.0.1:0"


@contextlib.contextmanager
def _interrupts_ignored_by_children():
    """The stop signals ignored while the local workers start, so that they inherit that (an ignored signal stays
    ignored in a new process, and Python then installs no handler of its own): a Ctrl-C, kill or closed terminal
    sent to every process of the group stops the batch here, which closes the workers, instead of killing each
    one mid-write (temporaries left behind, tracebacks of Dask and of multiprocessing's resource tracker).
    A signal sent in that second or so is lost."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in stop_signals()}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def open_client(workers: int, scheduler: Optional[str], quiet: bool = True):
    """A Dask client on an existing scheduler, or on a new local cluster of single-threaded worker processes.

    Local workers share the machine's cores: each gets cores/workers threads for torch (OMP_NUM_THREADS is
    read when torch is imported in the worker).
    """
    import importlib.util
    import logging
    from urllib.parse import urlsplit

    distributed = _distributed()
    if scheduler:
        try:
            return distributed.Client(scheduler, timeout="20s")
        except (OSError, TimeoutError, ValueError) as error:  # ValueError: not an address (no port...)
            raise InputError(f"cannot reach the Dask scheduler {scheduler}: {error}") from None
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    with _interrupts_ignored_by_children():
        cluster = distributed.LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=DASHBOARD_ADDRESS,
            silence_logs=logging.ERROR,
            env={"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads,
                 "PYTHONWARNINGS": "ignore"},
        )
    client = distributed.Client(cluster)
    client.owned_cluster = cluster  # closed with the client in close_client
    from .workerplugin import IgnoreInterrupts

    client.register_plugin(IgnoreInterrupts())  # not on a cluster of the user's: their workers keep their Ctrl-C
    if not quiet and importlib.util.find_spec("bokeh") is not None:
        print(f"softseg batch: Dask dashboard at http://127.0.0.1:{urlsplit(cluster.dashboard_link).port}/status",
              file=sys.stderr)
    return client


def close_client(client) -> None:
    cluster = getattr(client, "owned_cluster", None)
    client.close()
    if cluster is not None:
        cluster.close()


def run_batch(
    input_path,
    output_dir=None,
    *,
    workers: int = DEFAULT_WORKERS,
    scheduler: Optional[str] = None,
    overwrite: bool = False,
    include: Sequence[str] = (),
    threshold: float = 0.5,
    device: str = "auto",
    largest_component: bool = True,
    volume: Optional[int] = None,
    csa_format: str = "default",
    discs: Optional[str] = None,
    levels: Optional[str] = None,
    segment_file: Optional[Callable] = None,
    quiet: bool = False,
    both_polarities: bool = True,
) -> BatchResult:
    """Segment every image of a cohort and write the derivatives, the cohort CSVs and the HTML report.

    volume: the volume (0-based) to segment of each 4D image; 3D images are segmented whole.
    csa_format: "sct" also writes each image's CSA table in SCT's layout (`<stem>_csa_sct.csv`).
    discs: where each image's disc labels are, a path template with {stem} and {folder} (the image's
    derivatives folder, e.g. sub-01/anat), relative to the input folder; an image without one gets no levels.
    levels: "auto" finds each image's discs instead (vertebrae.py): per-level rows in the summary, and a
    sagittal <stem>_levels.png showing the discs or why there are none.
    segment_file: the per-image pipeline (default `pipeline.segment_file`, what `softseg segment` runs); it must
    be importable or picklable by the workers.
    both_polarities: each slice read as it is and with its grey levels inverted, as `softseg segment` does by
    default; False reads it once (`--no-both-polarities`: half the network time).
    """
    start = time.perf_counter()
    if workers < 1:
        raise InputError(f"--workers must be at least 1, not {workers}")
    if not 0.0 < threshold < 1.0:
        raise InputError(f"--threshold must be between 0 and 1, not {threshold}")
    input_path = Path(input_path)
    output_dir = Path(output_dir) if output_dir else default_output_dir(input_path)
    check_csa_format(csa_format)
    if output_dir.exists() and not output_dir.is_dir():
        raise InputError(f"{output_dir}: is a file; --output must be a folder (for the derivatives)")
    if input_path.is_dir() and output_dir.exists() and output_dir.samefile(input_path):
        # its dataset_description.json would make a plain folder read as an empty BIDS dataset next time
        raise InputError(f"{output_dir}: is the input folder; --output needs a folder of its own "
                         "(default INPUT/derivatives/softseg)")
    images = discover(input_path, include, exclude_dirs=[output_dir])
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"{output_dir}: cannot create the derivatives folder ({error.strerror})") from None
    remove_stale_outputs(output_dir)
    model_sha256 = installed_model_sha256() if segment_file is None else ""
    options = {"threshold": threshold, "device": device, "largest_component": largest_component,
               "both_polarities": both_polarities}
    if volume is not None:
        if volume < 0:
            raise InputError(f"--volume must be 0 or more, not {volume}")
        options.update(volume_index=volume, volume_index_4d_only=True)
    if levels is not None:
        if levels != "auto":
            raise InputError(f"--levels must be 'auto', not {levels!r}")
        if discs is not None:
            raise InputError("give the discs either as --discs or find them with --levels auto, not both")
        options["levels"] = levels
    recorded = {**options, "discs": discs, "reading": READING_REVISION}  # discs change the tables' levels, not the pipeline's options
    changed = settings_changed(output_dir, model_sha256, recorded)  # also under --overwrite: it dates the options
    if changed and not overwrite and not quiet:
        print(f"softseg batch: {changed}: redoing every image", file=sys.stderr)
    overwrite = overwrite or bool(changed)

    since_ns = options_since_ns(output_dir, changed)
    earlier_failures = {} if changed else read_known_failures(output_dir)
    known_failures = {} if overwrite else earlier_failures
    earlier_inputs = read_input_signatures(output_dir)
    results: Dict[str, ImageResult] = {}
    pending: List[SourceImage] = []
    for image in images:
        outputs = image_outputs(image, output_dir, csa_format, levels)
        as_text = {k: str(v) for k, v in outputs.items()}
        known = known_failures.get(image.path)
        if not overwrite and outputs_up_to_date(image, outputs, since_ns) and unchanged_since_recorded(image.path, earlier_inputs):
            results[image.path] = ImageResult(image, "skipped", outputs=as_text,
                                              note=earlier_inputs.get(image.path, {}).get("note") or "")
        elif known and known["signature"] and known["signature"] == _file_signature(image.path):
            results[image.path] = ImageResult(image, "failed", reason=known["reason"], outputs=as_text, bad_input=True,
                                              from_record=True)
        else:
            pending.append(image)

    progress = ProgressBar(len(images), quiet)
    for result in results.values():
        progress.update(result)
    if pending and segment_file is None and scheduler is None:
        from .inference import model_dir, resolve_device

        model_dir()  # no weights: say so now, not after starting a cluster (remote workers may have their own)
        if device == "cuda":
            resolve_device(device)  # no GPU here: one error line, not a failure recorded against every image
    per_image = {image.path: image_options(image, options, input_path, discs) for image in pending}
    without_discs = sum("discs_path" not in chosen for chosen in per_image.values())
    if discs is not None and without_discs and not quiet:  # a typo in the template costs every image its levels
        print(f"softseg batch: warning: no disc file for {without_discs} of {len(per_image)} images (--discs {discs}, "
              f"relative to {input_path if input_path.is_dir() else input_path.parent}): those get no levels",
              file=sys.stderr)
    # Recorded before any image is segmented, once nothing can refuse the run: a run stopped, then started again
    # with other options, must not keep outputs made under the options of the stopped one.
    write_dataset_description(output_dir, input_path, model_sha256, recorded, since_ns)
    if pending:
        segment_file = segment_file or default_segment_file()
        results.update(_run_on_dask(pending, output_dir, segment_file, per_image, (csa_format, levels), workers,
                                    scheduler, progress))

    ordered = [results[image.path] for image in images]
    write_failures(output_dir, ordered, earlier_failures)
    write_input_signatures(output_dir, ordered, earlier_inputs)
    summary_csv, spread_csv, report_html = write_cohort_outputs(output_dir, ordered, input_path)
    return BatchResult(output_dir, ordered, summary_csv, spread_csv, report_html, time.perf_counter() - start)


def image_outputs(image: SourceImage, output_dir, csa_format: str, levels: Optional[str] = None) -> Dict[str, Path]:
    """The derivatives of one image; with the SCT format, its CSA table in SCT's layout too; with automatic
    levels, the sagittal picture of its discs."""
    outputs = image.outputs(output_dir)
    if csa_format == "sct":
        outputs["csa_sct"] = outputs["csa"].with_name(image.stem + "_csa_sct.csv")
    if levels == "auto":
        outputs["levels_qc"] = outputs["csa"].with_name(image.stem + "_levels.png")
    return outputs


def image_options(image: SourceImage, options: dict, input_path: Path, discs: Optional[str]) -> dict:
    """The pipeline's options for one image: the shared ones, and its disc labels where the template finds them."""
    if discs is None:
        return options
    root = input_path if input_path.is_dir() else input_path.parent
    try:
        path = Path(discs.format(stem=image.stem, folder=image.output_dir))
    except (KeyError, IndexError, ValueError):
        raise InputError(f"--discs {discs!r}: use {{stem}} and {{folder}} only, e.g. "
                         "derivatives/labels/{folder}/{stem}_label-discs_dlabel.nii.gz") from None
    path = path if path.is_absolute() else root / path
    return {**options, "discs_path": str(path)} if path.is_file() else options


def _run_on_dask(pending, output_dir, segment_file, per_image, output_kinds, workers, scheduler,
                 progress) -> Dict[str, ImageResult]:
    as_completed = _distributed().as_completed
    results = {}
    client = open_client(min(workers, len(pending)), scheduler, quiet=progress.quiet)
    try:
        futures = {}
        for image in pending:
            outputs = {k: str(v) for k, v in image_outputs(image, output_dir, *output_kinds).items()}
            future = client.submit(process_image, image, outputs, segment_file, per_image[image.path], pure=False,
                                   key=f"softseg-{image.stem}-{len(futures)}")
            futures[future] = (image, outputs)
        for future in as_completed(futures):
            image, outputs = futures[future]
            try:
                record = future.result()
            except Exception as error:  # noqa: BLE001 - e.g. the worker died (out of memory) on this image
                record = {"status": "failed", "reason": f"{type(error).__name__}: {error}"}
            if record["status"] == "model":
                client.cancel(list(futures))
                raise InputError(record["reason"])
            result = ImageResult(image, outputs=outputs, **record)
            results[image.path] = result
            progress.update(result)
    finally:
        close_client(client)
        remove_stale_outputs(output_dir)  # what a worker that died mid-write left (its process is gone now)
    return results


# --------------------------------------------------------------------------------------------- command line
def add_parser(subparsers):
    """Add `softseg batch` to the command line's subparsers."""
    parser = subparsers.add_parser(
        "batch",
        help="segment a whole cohort (BIDS dataset, folder or file list) on a Dask cluster",
        description=(
            "Run the `softseg segment` pipeline on every image of a BIDS dataset, a folder or a file list "
            "(one path a line), on a local Dask cluster or an existing scheduler. Writes BIDS derivatives "
            "(<stem>_label-SC_probseg.nii.gz, <stem>_label-SC_mask.nii.gz, <stem>_csa.csv, <stem>_qc.png), "
            f"{SUMMARY_FILE}, {SPREAD_FILE} (CSA spread across contrasts per subject) and {REPORT_FILE}. "
            "A re-run skips images whose outputs are up to date."
        ),
    )
    parser.add_argument("input", help="BIDS dataset folder, folder of NIfTI/NRRD images, or text file listing images")
    parser.add_argument("--output", "-o", help="derivatives folder (default: INPUT/derivatives/softseg)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--workers", "-j", type=int, default=DEFAULT_WORKERS, help=f"local worker processes (default {DEFAULT_WORKERS})")
    where.add_argument("--scheduler", help="address of an existing Dask scheduler, e.g. tcp://HOST:8786")
    parser.add_argument("--overwrite", action="store_true", help="redo every image, even those already done or known to fail")
    parser.add_argument("--include", action="append", default=[], metavar="GLOB", help="only images whose relative path or name matches (repeatable), e.g. '*T2w*'")
    parser.add_argument("--threshold", type=float, default=0.5, help="threshold of the binary mask (default 0.5)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where each worker runs the model")
    parser.add_argument("--keep-all-components", action="store_true", help="keep every connected component of the mask")
    parser.add_argument("--volume", type=int, metavar="N", help="of each 4D image (a DWI or fMRI series) segment its volume N (0-based); 3D images are segmented whole")
    parser.add_argument("--format", choices=CSA_FORMATS, default="default",
                        help="sct: also write each image's CSA table in sct_process_segmentation's layout (<stem>_csa_sct.csv)")
    parser.add_argument("--discs", metavar="TEMPLATE",
                        help="each image's disc labels (SCT's -discfile convention), a path relative to INPUT with {stem} and "
                             "{folder} (the image's folder, e.g. sub-01/anat), e.g. "
                             "'derivatives/labels/{folder}/{stem}_label-discs_dlabel.nii.gz'; images without one get no levels")
    parser.add_argument("--levels", choices=("auto",), help="auto: find each image's vertebral discs: per-level rows in the "
                        "summary and a sagittal <stem>_levels.png (an image whose discs cannot be numbered gets no level; its picture says why)")
    parser.add_argument("--both-polarities", action=argparse.BooleanOptionalAction, default=True,
                        help="read each slice as it is and with its grey levels inverted, and average (the default, as "
                             "softseg segment); --no-both-polarities reads it once, in half the network time")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    parser.set_defaults(func=main)
    return parser


def main(args) -> int:
    result = run_batch(
        args.input,
        args.output,
        workers=args.workers,
        scheduler=args.scheduler,
        overwrite=args.overwrite,
        include=args.include,
        threshold=args.threshold,
        device=args.device,
        largest_component=not args.keep_all_components,
        volume=args.volume,
        csa_format=args.format,
        discs=args.discs,
        levels=args.levels,
        quiet=args.quiet,
        both_polarities=args.both_polarities,
    )
    if not args.quiet:
        print(
            f"{len(result.results)} images: {result.count('done')} done, {result.count('skipped')} already done, "
            f"{result.count('failed')} failed in {result.seconds:.1f} s\n"
            f"CSA summary: {result.summary_csv}\nreport: {result.report_html}"
        )
    for warned in [] if args.quiet else result.warnings:  # as segment -q: the summary and report still have them
        print(f"warning: {warned.image.path}: {warned.note}", file=sys.stderr)
    for failure in result.failures:  # errors are not silenced: the exit code alone would not say which
        print(f"failed: {failure.image.path}: {failure.why}", file=sys.stderr)
    return 1 if result.failures else 0
