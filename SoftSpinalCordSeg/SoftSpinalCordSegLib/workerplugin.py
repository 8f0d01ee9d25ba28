"""The Dask worker plugin of `softseg batch`'s local workers (it imports dask.distributed: import it there only)."""

from distributed.diagnostics.plugin import WorkerPlugin


class IgnoreInterrupts(WorkerPlugin):
    """SIGINT ignored by a local worker, also by one that Dask restarts: a Ctrl-C in the terminal reaches every
    process of the group, and only the batch must act on it (workers would each print a traceback)."""

    name = "softseg-ignore-interrupts"

    def setup(self, worker):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():  # where a worker process runs its plugins
            signal.signal(signal.SIGINT, signal.SIG_IGN)
