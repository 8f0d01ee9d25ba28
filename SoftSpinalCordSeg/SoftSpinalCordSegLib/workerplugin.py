"""The Dask worker plugin of `softseg batch`'s local workers (it imports dask.distributed: import it there only)."""

from distributed.diagnostics.plugin import WorkerPlugin


class IgnoreInterrupts(WorkerPlugin):
    """The stop signals (SIGINT, SIGTERM, SIGHUP) ignored by a local worker, also by one that Dask restarts: a
    Ctrl-C, kill or closed terminal reaches every process of the group, and only the batch must act on it
    (workers would each print a traceback, or die mid-write)."""

    name = "softseg-ignore-interrupts"

    def setup(self, worker):
        import signal
        import threading

        from .errors import stop_signals

        if threading.current_thread() is threading.main_thread():  # where a worker process runs its plugins
            for signum in stop_signals():
                signal.signal(signum, signal.SIG_IGN)
