"""The `luigiflow` read commands (runs, show, diff) run in this process: they import
nothing a subprocess would not, and save the interpreter start on a loaded machine."""

from __future__ import annotations

import pytest


def read_command(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `luigiflow ARGS` run through its entry point."""
    from luigiflow.cli import main

    capsys.readouterr()
    code = 0
    try:
        main(list(args))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err
