"""Run `inference.segment_image` in a separate process that reports progress and can be killed.

Slicer starts it with its own Python (`PythonSlicer -m SoftSpinalCordSegLib.worker IN.npz OUT.npz`) so the
application stays responsive and Cancel can stop it at once. The worker reads the image (`image`, in voxel
order i, j, k) and its `affine` from IN.npz and prints one line per event on stdout:

    PROGRESS <fraction> <message>
    DEVICE <cpu|cuda> [note, when a GPU was asked for but the CPU is used]
    ERROR <ExceptionClass> <message>
    DONE

The probability is written to OUT.npz atomically (temporary file + rename), so a killed worker leaves none.
`WorkerProcess` is the parent side; `segment_in_subprocess` is a blocking drop-in for `segment_image`.
"""

from __future__ import annotations

import argparse
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import numpy as np

from .errors import CancelledError, InputError, ModelNotInstalledError

_ERRORS = {"InputError": InputError, "ModelNotInstalledError": ModelNotInstalledError}


@dataclass
class WorkerEvent:
    kind: str  # PROGRESS, DEVICE, ERROR, DONE or LOG (any other output line)
    fraction: Optional[float] = None
    message: str = ""


def parse_line(line: str) -> WorkerEvent:
    """One stdout line of the worker as an event (unknown lines become LOG events)."""
    line = line.rstrip("\r\n")
    kind, _, rest = line.partition(" ")
    if kind == "PROGRESS":
        fraction, _, message = rest.partition(" ")
        try:
            return WorkerEvent("PROGRESS", min(max(float(fraction), 0.0), 1.0), message)
        except ValueError:
            return WorkerEvent("LOG", message=line)
    if kind in ("DEVICE", "ERROR", "DONE"):
        return WorkerEvent(kind, message=rest)
    return WorkerEvent("LOG", message=line)


def _resolved_device(device: str):
    """(device to use, note): asking for a GPU where there is none falls back to the CPU with a note."""
    from .inference import resolve_device

    try:
        resolved = resolve_device(device)
    except InputError:
        if device != "cuda":
            raise
        resolved = "cpu"
    note = "no CUDA GPU found: running on the CPU (slower)" if resolved == "cpu" and device != "cpu" else ""
    return resolved, note


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m SoftSpinalCordSegLib.worker", description=__doc__.split("\n\n")[0])
    parser.add_argument("input", help=".npz with 'image' (i, j, k) and 'affine' (4x4 voxel to RAS)")
    parser.add_argument("output", help=".npz to write with 'probability'")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--all-components", action="store_true", help="keep every connected component")
    parser.add_argument("--both-polarities", action=argparse.BooleanOptionalAction, default=True,
                        help="average the reading of each slice and of its inverse")
    args = parser.parse_args(argv)

    def report(fraction, message=""):
        print(f"PROGRESS {fraction:.4f} {message}", flush=True)

    try:
        with np.load(args.input) as data:
            image, affine = data["image"], data["affine"]
        os.remove(args.input)  # read: not left behind if the parent dies
        device, note = _resolved_device(args.device)
        print(f"DEVICE {device} {note}".rstrip(), flush=True)
        from .inference import segment_image, tune_cpu_allocator

        tune_cpu_allocator()  # this process only runs the model
        probability = segment_image(image, affine, device=device, largest_component=not args.all_components, progress=report,
                                    both_polarities=args.both_polarities)
        _save_atomically(args.output, probability=np.asarray(probability, dtype=np.float32))
    except InputError as error:
        print(f"ERROR {type(error).__name__} {error}", flush=True)
        return 2
    except Exception as error:  # one line for the user; the traceback goes to the worker's log
        import traceback

        traceback.print_exc(file=sys.stderr)
        print(f"ERROR InputError segmentation failed: {type(error).__name__}: {error}".splitlines()[0], flush=True)
        return 1
    print("DONE", flush=True)
    return 0


def _save_atomically(path, **arrays):
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".npz")
    try:
        with os.fdopen(handle, "wb") as stream:
            np.savez(stream, **arrays)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def worker_python(python: Optional[str] = None, executable: str = sys.executable) -> str:
    """The Python that runs the worker: `python` when given, else this process's interpreter. Inside Slicer
    that is the application itself (SlicerApp-real, Slicer.exe), which cannot run `-m`: Slicer must pass
    PythonSlicer (see `python_slicer`)."""
    if python:
        return python
    if not Path(executable).name.lower().startswith("python"):
        raise InputError(f"no Python given to run the segmentation process, and {executable} is an application, "
                         "not Python (inside Slicer the PythonSlicer launcher runs it)")
    return executable


def python_slicer(slicer_home: Optional[str] = None) -> str:
    """Slicer's Python launcher, PythonSlicer: on the PATH Slicer sets, else in <Slicer home>/bin."""
    found = shutil.which("PythonSlicer")
    if found:
        return found
    name = "PythonSlicer.exe" if os.name == "nt" else "PythonSlicer"
    candidate = Path(slicer_home, "bin", name) if slicer_home else None
    if candidate is not None and candidate.is_file():
        return str(candidate)
    raise InputError(f"PythonSlicer, Slicer's Python, was found neither on the PATH nor in {candidate or 'Slicer'}: "
                     "the Slicer installation is incomplete; reinstall Slicer")


class WorkerProcess:
    """The parent side: start the worker, collect its events without blocking, cancel it, fetch the result."""

    def __init__(self, image, affine, *, device="auto", largest_component=True, both_polarities=True,
                 python: Optional[str] = None, env=None):
        python = worker_python(python)
        self._directory = Path(tempfile.mkdtemp(prefix="softseg-"))
        self._output = self._directory / "probability.npz"
        np.savez(self._directory / "input.npz", image=np.asarray(image), affine=np.asarray(affine, dtype=float))
        command = [python, "-u", "-m", "SoftSpinalCordSegLib.worker",
                   str(self._directory / "input.npz"), str(self._output), "--device", device]
        if not largest_component:
            command.append("--all-components")
        command.append("--both-polarities" if both_polarities else "--no-both-polarities")
        package_root = str(Path(__file__).resolve().parent.parent)
        environment = dict(os.environ if env is None else env)
        environment["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, environment.get("PYTHONPATH", "")) if p)
        try:
            self._process = subprocess.Popen(  # its own process group: cancel kills a launcher's child too
                command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, env=environment,
                **({"start_new_session": True} if os.name == "posix" else
                   {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW}))
        except OSError as error:
            shutil.rmtree(self._directory, ignore_errors=True)
            raise InputError(f"cannot start the segmentation process {command[0]}: {error.strerror or error}") from None
        self._result: Optional[np.ndarray] = None
        self._events: "queue.Queue[WorkerEvent]" = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.cancelled = False
        self.error: Optional[WorkerEvent] = None
        self.device: Optional[str] = None
        self.device_note = ""  # set when a GPU was asked for (or auto) but the CPU is used
        self.log: List[str] = []

    def _read(self):
        for line in self._process.stdout:
            self._events.put(parse_line(line))
        self._process.stdout.close()

    def poll(self) -> List[WorkerEvent]:
        """Events received since the last call (never blocks)."""
        events = []
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return events
            if event.kind == "ERROR":
                self.error = event
            elif event.kind == "DEVICE":
                self.device, _, self.device_note = event.message.partition(" ")
            elif event.kind == "LOG":
                self.log.append(event.message)
            events.append(event)

    @property
    def running(self) -> bool:
        return self._process.poll() is None or self._reader.is_alive()

    def cancel(self):
        """Kill the worker with every process it started and remove its files; the result is then unavailable."""
        self.cancelled = True
        if os.name == "posix":
            if self.running:  # the launcher, or a process it started, still holds the output pipe
                try:
                    os.killpg(self._process.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        elif self._process.poll() is None:
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(self._process.pid)], capture_output=True)
        self._process.wait()
        self._reader.join(timeout=5)
        shutil.rmtree(self._directory, ignore_errors=True)

    def result(self) -> np.ndarray:
        """The probability once the worker has finished; raises its error, or CancelledError."""
        if self.cancelled:
            raise CancelledError("segmentation cancelled")
        if self._result is not None:
            return self._result
        self._process.wait()
        self._reader.join()
        self.poll()
        try:
            if self.error is not None:
                class_name, _, message = self.error.message.partition(" ")
                raise _ERRORS.get(class_name, InputError)(message)
            code = self._process.returncode
            if code != 0 or not self._output.exists():
                killed = " (killed by the system: out of memory?)" if code is not None and code < 0 else ""
                tail = " | ".join([line for line in self.log if line.strip()][-3:])  # no text: no empty tail
                raise InputError(f"segmentation process failed (exit code {code}){killed}" + (f": {tail}" if tail else ""))
            with np.load(self._output) as data:
                self._result = data["probability"]
            return self._result
        finally:
            shutil.rmtree(self._directory, ignore_errors=True)


def segment_in_subprocess(image, affine, *, device="auto", largest_component=True, both_polarities=True,
                          progress: Optional[Callable[[float, str], None]] = None, python: Optional[str] = None,
                          poll_seconds: float = 0.1):
    """Blocking drop-in for `inference.segment_image` that runs it in a worker process."""
    worker = WorkerProcess(image, affine, device=device, largest_component=largest_component,
                           both_polarities=both_polarities, python=python)
    try:
        while worker.running:
            for event in worker.poll():
                if event.kind == "PROGRESS" and progress:
                    progress(event.fraction, event.message)
            time.sleep(poll_seconds)
        return worker.result()
    except BaseException:
        worker.cancel()  # Ctrl+C or any error: never leave the process running
        raise


if __name__ == "__main__":
    from .inference import exit_process

    exit_process(main())
