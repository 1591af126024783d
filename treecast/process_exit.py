"""End `starter.py` and `worker.py` with their exit status, skipping interpreter shutdown.

The Temporal SDK's Rust core keeps native threads alive after a client was used. When
Python finalizes while one of them calls back into the interpreter, the process can die
with "Fatal Python error: PyGILState_Release" (SIGABRT, exit status 134) after the
command already finished (temporalio/sdk-python#300). That breaks the exit statuses the
CLI documents and can lose buffered `--json` output. So the entry points flush what they
wrote and leave with `os._exit`, which does not run the finalization that crashes.
Everything that must happen before exit (committing, closing the worker, stopping the dev
server) is done inside `main()`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Callable
from typing import NoReturn

EXIT_INTERRUPTED = 130


def _status(stop: SystemExit) -> int:
    """The exit status `sys.exit(code)` would give (printing a non-integer code, as Python does)."""
    code = stop.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def flush_and_exit(code: int) -> NoReturn:
    """Flush logging, stdout and stderr, then end the process at once with `code`."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        # A closed pipe or stream: nothing more can be written, the status still counts.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def run_and_exit(main: Callable[[], int]) -> NoReturn:
    """Run `main()` and exit with its status the way `sys.exit(main())` would, minus finalization."""
    try:
        code = main()
    except SystemExit as stop:  # argparse's --help and usage errors
        code = _status(stop)
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    except BaseException:  # an unexpected error: report it as Python would, with status 1
        traceback.print_exc()
        code = 1
    flush_and_exit(code)
