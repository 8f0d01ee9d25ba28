"""`python -m SoftSpinalCordSegLib` and the `softseg` console command: the command line.

Ctrl+C, SIGTERM or SIGHUP while the modules load (a second or so, before anything is written) end the
process quietly; once the command runs, cli.main turns them into a clean stop that removes unfinished outputs.
"""

import os
import signal
import sys


def _stop_while_loading(signum, frame):
    sys.stderr.write(f"softseg: stopped by {signal.Signals(signum).name} before starting\n")
    os._exit(128 + signum)


def main():
    from .errors import stop_signals  # (a small module: the handlers are in place before the heavy imports)

    for signum in stop_signals():
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _stop_while_loading)
    from .cli import run

    run()


if __name__ == "__main__":
    main()
