"""Running an existing script as a child process, the way a terminal would, but tracked.

The child gets its own process group, so Ctrl-C or SIGTERM sent to luigiflow stops the
script and everything it started, and nothing outlives the run. Its stdout and stderr
are streamed live to ours and captured to files at the same time.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import pathlib
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

from luigiflow._core import platform

# A shell string runs through `sh -c` (as DVC does); a list is the argument vector.
Step = str | Sequence[str]

STOP_GRACE_S = 10.0  # between SIGTERM and SIGKILL for the child's group
TAIL_LINES = 20


@dataclass
class CommandResult:
    """What one command did: its exit code and where its output was captured."""

    exit_code: int
    stdout: pathlib.Path
    stderr: pathlib.Path
    failed_step: str = ""
    stderr_tail: str = ""  # its last TAIL_LINES lines, read before the files go away


def step_text(step: Step) -> str:
    return step if isinstance(step, str) else shlex.join(step)


def step_words(step: Step) -> list[str]:
    """The words of a step (a shell string is split as the shell would, roughly)."""
    if isinstance(step, str):
        try:
            return shlex.split(step)
        except ValueError:
            return step.split()
    return list(step)


def run_steps(
    steps: Sequence[Step], cwd: pathlib.Path, env: Mapping[str, str], logs: pathlib.Path
) -> CommandResult:
    """Run the steps in order in `cwd`, stopping at the first that fails."""
    logs.mkdir(parents=True, exist_ok=True)
    out_path, err_path = logs / "stdout.txt", logs / "stderr.txt"
    code = 0
    step: Step = ""
    with open(out_path, "wb") as out_file, open(err_path, "wb") as err_file:
        for step in steps:
            code = _run_one(step, cwd, env, out_file, err_file)
            if code != 0:
                break
    tail = ""
    if code != 0:
        text = err_path.read_text(encoding="utf-8", errors="replace")
        tail = "\n".join(text.rstrip("\n").splitlines()[-TAIL_LINES:])
    return CommandResult(code, out_path, err_path, step_text(step) if code else "", tail)


def _run_one(
    step: Step, cwd: pathlib.Path, env: Mapping[str, str], out_file: IO[bytes], err_file: IO[bytes]
) -> int:
    shell = isinstance(step, str)
    try:
        proc = subprocess.Popen(
            step if shell else list(step),
            shell=shell,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own group: we stop it and all it started
        )
    except OSError as exc:  # no such program: report it as the command's own failure
        message = f"cannot start {step_text(step)!r}: {exc}\n".encode()
        err_file.write(message)
        _echo(sys.stderr, message)
        return 127
    pumps = [
        threading.Thread(target=_pump, args=(proc.stdout, out_file, sys.stdout), daemon=True),
        threading.Thread(target=_pump, args=(proc.stderr, err_file, sys.stderr), daemon=True),
    ]
    for pump in pumps:
        pump.start()
    try:
        with _terminate_raises_interrupt():
            code = proc.wait()
    except BaseException:
        stop_group(proc)
        raise
    finally:
        for pump in pumps:
            pump.join(timeout=5)
    return code


def _pump(source: IO[bytes] | None, capture: IO[bytes], terminal: Any) -> None:
    if source is None:
        return
    for line in iter(source.readline, b""):
        capture.write(line)
        capture.flush()
        _echo(terminal, line)
    source.close()


def _echo(terminal: Any, data: bytes) -> None:
    with contextlib.suppress(Exception):  # a closed or odd terminal never fails the run
        terminal.write(data.decode("utf-8", errors="replace"))
        terminal.flush()


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the child's process group, then SIGKILL what is left after a grace period."""
    for sig, wait_s in ((signal.SIGTERM, STOP_GRACE_S), (platform.KILL_SIGNAL, STOP_GRACE_S)):
        try:
            platform.signal_group(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            break
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
        if sig == signal.SIGTERM:
            # The leader is gone; stragglers in its group get the same end.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                platform.signal_group(proc.pid, platform.KILL_SIGNAL)
        break


@contextlib.contextmanager
def _terminate_raises_interrupt() -> Iterator[None]:
    """While a child runs, SIGTERM to us ends like Ctrl-C: the child's group is stopped
    and the run is marked KILLED. Signal handlers can be set from the main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"stopped by signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def child_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Our environment for the child, with luigiflow's virtualenv first on PATH when it
    was not activated (`.venv/bin/luigiflow run ...`), so `python` means that one."""
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")  # the child's output streams live
    in_venv = sys.prefix != sys.base_prefix
    if in_venv and not env.get("VIRTUAL_ENV") and not env.get("CONDA_PREFIX"):
        bindir = os.path.dirname(sys.executable)
        path = env.get("PATH", "")
        if path.split(os.pathsep)[:1] != [bindir]:
            env["PATH"] = bindir + (os.pathsep + path if path else "")
    env.update(extra or {})
    return env


_PROBE = (
    "import json, platform, sys\n"
    "from importlib import metadata\n"
    "names = sorted({f\"{d.metadata['Name']}=={d.version}\" for d in metadata.distributions()"
    " if d.metadata['Name']}, key=str.lower)\n"
    "print(json.dumps({'executable': sys.executable, 'version': platform.python_version(),"
    " 'prefix': sys.prefix, 'packages': names}))\n"
)


@functools.lru_cache(maxsize=16)
def _probe(interpreter: str, pythonpath: str, path: str) -> dict[str, Any] | None:
    """What an interpreter is and holds; asked once per process (a second of start-up)."""
    env = {**os.environ, "PYTHONPATH": pythonpath, "PATH": path}
    try:
        out = subprocess.run(
            [interpreter, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=60
        )
        found: dict[str, Any] = json.loads(out.stdout)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None
    return found


def describe_interpreter(
    steps: Sequence[Step], cwd: pathlib.Path, env: Mapping[str, str]
) -> tuple[dict[str, str], str | None]:
    """The program the command ran with ({program, interpreter, python_version, ...})
    and, for Python, its installed packages (`pip freeze` style), else None."""
    words = step_words(steps[0]) if steps else []
    while words and "=" in words[0] and not words[0].startswith("="):
        words = words[1:]  # VAR=value prefixes of a shell command
    if not words:
        return {}, None
    program = words[0]
    found = shutil.which(program, path=env.get("PATH")) or (
        str((cwd / program).resolve()) if (cwd / program).exists() else None
    )
    facts = {"program": program, "interpreter": found or program}
    for key in ("VIRTUAL_ENV", "CONDA_PREFIX"):
        if env.get(key):
            facts[key.lower()] = env[key]
    if not found or not os.path.basename(program).startswith("python"):
        return facts, None
    probe = _probe(found, env.get("PYTHONPATH", ""), env.get("PATH", ""))
    if probe is None:
        return facts, None
    facts.update(
        interpreter=probe["executable"], python_version=probe["version"], prefix=probe["prefix"]
    )
    return facts, "\n".join(probe["packages"]) + "\n"
