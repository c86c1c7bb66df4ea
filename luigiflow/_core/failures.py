"""Where a failure happened in the user's own code, for one-line reports."""

from __future__ import annotations

import os
import pathlib
import sysconfig
import traceback

_PACKAGE = str(pathlib.Path(__file__).resolve().parent.parent) + os.sep
_LIBRARIES = tuple(
    str(pathlib.Path(p).resolve()) + os.sep
    for p in {sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"]}
)


def _is_users(filename: str) -> bool:
    if filename.startswith("<"):  # <frozen importlib._bootstrap>, <string>
        return False
    path = str(pathlib.Path(filename).resolve())
    if path.startswith(_PACKAGE) or path.startswith(_LIBRARIES):
        return False
    return "site-packages" not in path and "dist-packages" not in path


def shown_path(filename: str) -> str:
    """A file name relative to the working directory when it lies below it."""
    path = pathlib.Path(filename).resolve()
    try:
        return path.relative_to(pathlib.Path.cwd()).as_posix()
    except ValueError:
        return str(path)


def user_location(exc: BaseException) -> str:
    """`file:line` of the innermost frame of `exc` in the user's code ('' if none).

    A SyntaxError's location is the file it reports, not a frame.
    """
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{shown_path(exc.filename)}:{exc.lineno}"
    frames = traceback.extract_tb(exc.__traceback__)
    for frame in reversed(frames):
        if _is_users(frame.filename):
            return f"{shown_path(frame.filename)}:{frame.lineno}"
    return ""


def one_line(exc: BaseException) -> str:
    """`ErrorName: first line of the message`."""
    first = (str(exc).splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
