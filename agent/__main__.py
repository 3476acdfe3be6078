"""The process behind `aml-netcheck` and `python -m agent`: where it starts and where it ends.

- SIGINT and SIGTERM are caught first, before anything heavy is imported: a stop during start-up
  is exit 3 and one line, never a traceback nor a bare 143. During a run `check` turns a stop into
  a partial report instead (agent/cli.py), and `demo` hands the signals to the lab it tears down.
- `--version` alone is answered here, before the CLI framework loads.
- The end is `os._exit` once stdout and stderr are flushed and the atexit handlers have run: every
  file was written whole and closed by its writer (agent/output/files.py), so the interpreter's
  teardown, freeing every module and object, would only add time (0.15 s after a `check`)."""

from __future__ import annotations

import atexit
import os
import signal
import sys
from types import FrameType
from typing import NoReturn

SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_UNKNOWN = 3
EXIT_UNFLUSHED = 120  # what the interpreter's own exit gives when stdout cannot be flushed


def _stopped(signum: int, frame: FrameType | None) -> None:
    """A stop outside a run: nothing has been written (a report is written with the signals held),
    so there is nothing to finish. Exit at once rather than raise: an exception raised into
    whatever is running can surface inside a compiled extension's import (cryptography's ends the
    process with 130 and no word)."""
    os.write(2, b"aml-netcheck: interrupted\n")
    os._exit(EXIT_UNKNOWN)


def run() -> NoReturn:
    for sig in SIGNALS:
        signal.signal(sig, _stopped)
    if sys.argv[1:] == ["--version"]:
        from agent import version_line

        print(version_line())
        code = 0
    else:
        from agent.cli import main

        code = main()
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)  # nothing cuts the flush short
    try:
        sys.stdout.flush()
    except OSError:  # a closed pipe (`| head`)
        code = EXIT_UNFLUSHED
    atexit._run_exitfuncs()
    try:
        sys.stderr.flush()
    finally:
        os._exit(code)


if __name__ == "__main__":
    run()
