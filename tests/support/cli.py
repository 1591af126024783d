"""The command line in this test's process."""

from __future__ import annotations

import json
from contextlib import redirect_stderr, redirect_stdout
from io import StringIO
from typing import Any

import starter


def invoke(argv: list[str]) -> tuple[int, Any, str]:
    """`starter.py --json ARGV`: its exit status, what it printed (parsed; None when
    nothing) and its stderr."""
    out, err = StringIO(), StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = starter.main(["--json", *argv])
    text = out.getvalue()
    return code, json.loads(text) if text.strip() else None, err.getvalue()
