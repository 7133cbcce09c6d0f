"""Run the ``cormorant`` command line inside the test process (a subprocess costs a second of
imports per call, too slow for a fuzz test), with its exit code, output and any traceback."""

from __future__ import annotations

import io
import sys
import traceback
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass


@dataclass
class CliResult:
    code: int | None
    out: str
    err: str
    traceback: str | None = None

    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("error:")]


def run_cli(*args: object) -> CliResult:
    """``cormorant ARGS`` through ``cormorant.cli.main``; an exception that escapes ``main``
    (a traceback for a user) is returned in ``traceback`` rather than raised."""
    from cormorant.cli import main

    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["cormorant", *map(str, args)]
    code: int | None = 0
    trace = None
    try:
        with redirect_stdout(out), redirect_stderr(err):
            main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - what a user would see as a traceback
        trace = traceback.format_exc()
        code = None
    finally:
        sys.argv = argv
    return CliResult(code, out.getvalue(), err.getvalue(), trace)


def assert_one_error_line(result: CliResult, message: str = "") -> None:
    """Non-zero exit, no traceback, exactly one ``error:`` line (a ``^`` may follow it)."""
    assert result.traceback is None, result.traceback
    assert result.code not in (0, None), (result.code, result.err)
    lines = result.error_lines()
    assert len(lines) == 1, result.err
    others = [line for line in result.err.splitlines()
              if line and not line.startswith("error:") and line.strip() != "^"]
    assert not others, result.err
    assert message in lines[0], lines[0]
