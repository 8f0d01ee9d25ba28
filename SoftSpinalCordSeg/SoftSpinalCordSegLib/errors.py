"""Errors that reach the user as one line (the command line prints them, Slicer shows them)."""

import errno


class InputError(Exception):
    """A problem with what the user gave us: the message is shown as is, without a traceback."""


class OutputError(InputError):
    """An output cannot be written where the user asked (a read-only disk, no permission, a file where a folder
    should be): the message names the output; the command line exits 1, as for a full disk."""


class DeviceError(InputError):
    """The device asked for (--device cuda) is not on this machine: a fault of where it runs, not of the image."""


class ModelNotInstalledError(InputError):
    """No trained weights are installed, or they fail their checksum."""


class DamagedModelError(ModelNotInstalledError):
    """Model files are there but unusable (checksum, damaged or foreign weights, model card), or
    $SOFTSEG_MODEL_DIR names a folder without them: reinstall, do not fall back to anything."""


class CancelledError(Exception):
    """The user cancelled a running job."""


def stop_signals() -> list:
    """The signals that stop a run (Ctrl+C, kill, a closed terminal), those this system has."""
    import signal

    return [getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)]


class Interrupted(KeyboardInterrupt):
    """The process got SIGTERM or SIGHUP: unwound like Ctrl+C, so that unfinished outputs are removed."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


OS_ERROR_ADVICE = {
    errno.ENOSPC: "free some disk space and run again",
    errno.EDQUOT: "free some space (disk quota) and run again",
    errno.EFBIG: "the file is larger than this system allows here: write it elsewhere",
    errno.EACCES: "choose a place you may write to",
    errno.EPERM: "choose a place you may write to",
    errno.EROFS: "the disk is read-only: choose another place",
}


def describe_os_error(error: OSError) -> str:
    """'FILE: reason; what to do' for an OSError (its file, as written to or read from)."""
    reason = error.strerror or str(error)
    where = f"{error.filename}: " if error.filename else ""
    advice = OS_ERROR_ADVICE.get(error.errno)
    return f"{where}{reason}" + (f"; {advice}" if advice else "")
