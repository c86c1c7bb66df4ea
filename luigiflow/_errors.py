"""The luigiflow exception tree.

    LuigiflowError
     ├── TaskDefinitionError   a task class is malformed (artifacts, requires, version)
     ├── ParameterError        parameter values are unknown, missing or of the wrong type
     ├── ArtifactError         an artifact cannot be saved, found, loaded or verified
     ├── TaskNotFoundError     a module or task name does not exist
     ├── RunNotFoundError      a run id or experiment names nothing in the store
     ├── TrackingError         the tracking store cannot be reached or refused a request
     ├── ConfigError           an experiment config, pipeline or dvc.yaml file is invalid
     ├── CommandFailedError    a command task's command exited non-zero
     ├── WorkerDiedError       the process running a task died (SIGKILL, out of memory)
     ├── UntrustedRunError     a run's signature or stored code does not verify: not executed
     ├── RunStoppedError       another worker ended a task's run before it was recorded
     ├── TaskExitedError       task code ended its process (os._exit) mid-task
     ├── TrialPrunedError      an adaptive search's pruner stopped a trial (its run: KILLED)
     └── BuildError            one or more tasks failed during `luigiflow.build`

    BuildInterrupted (a KeyboardInterrupt)  Ctrl-C or SIGTERM stopped a build

Every message names the task, parameter or run concerned and says what to do.
The CLI catches `LuigiflowError` only and prints `ErrorName: message`.
"""

from __future__ import annotations

import re
from typing import Any

# The password of a URL with credentials (http://alice:PASSWORD@host, postgresql://u:p@h).
_URL_PASSWORD = re.compile(r"(?<=://)([^/\s:@]*):([^/\s@]+)@")


def mask_credentials(text: str) -> str:
    """`text` with the password of every URL in it replaced by `<redacted>`."""
    return _URL_PASSWORD.sub(r"\1:<redacted>@", text)


class LuigiflowError(Exception):
    """Root of every error luigiflow raises on purpose.

    Its message never shows a password given in a URL (a tracking URI with credentials
    is named by many messages, printed on terminals and in CI logs).
    """

    def __init__(self, *args: Any) -> None:
        super().__init__(*(mask_credentials(a) if isinstance(a, str) else a for a in args))


class TaskDefinitionError(LuigiflowError):
    """A task class is malformed (fix the class, nothing was run)."""


class ParameterError(LuigiflowError):
    """Parameter values given to a task are unknown, missing or of the wrong type."""


class ArtifactError(LuigiflowError):
    """An artifact could not be saved, found, loaded or verified."""


class TaskNotFoundError(LuigiflowError):
    """A module or task name given on the command line does not exist."""


class RunNotFoundError(LuigiflowError):
    """A run id, task or experiment names nothing in the tracking store."""


class TrackingError(LuigiflowError):
    """The tracking store could not be reached or refused a request."""


class ConfigError(LuigiflowError):
    """An experiment configuration file is invalid."""


class CommandFailedError(LuigiflowError):
    """A command task's command exited non-zero; the message ends with its stderr tail."""


class TaskFailedError(LuigiflowError):
    """Stands in for a task exception that could not cross a process boundary."""


class UnsupportedPlatformError(LuigiflowError):
    """luigiflow refuses to run on an operating system it is not tested on (Windows)."""


class StrArtifactWarning(UserWarning):
    """A `str` given to `save()` names a file; it is stored as the text, not the file."""


class TaskExitedError(LuigiflowError):
    """Task code ended its process (`os._exit`) instead of returning or raising."""


class RunStoppedError(LuigiflowError):
    """Another worker marked a task's run KILLED (it judged this one dead, e.g. paused past
    its lease) before the result was recorded: the result is not recorded."""


class WorkerDiedError(LuigiflowError):
    """The process running a task died without a word (SIGKILL, the OOM killer)."""


class TrialPrunedError(LuigiflowError):
    """An adaptive search's pruner stopped a trial from the values it logged per step;
    its run is KILLED with tag `luigiflow.pruned`, never a result (docs/guides/from-optuna.md)."""


class UntrustedRunError(LuigiflowError):
    """A run's signature or stored code does not verify, so nothing of it is executed."""


class BuildInterrupted(KeyboardInterrupt):
    """A build stopped by Ctrl-C or SIGTERM; `killed` maps each run marked KILLED to its task.

    It is a KeyboardInterrupt, so code that stops on Ctrl-C keeps doing so.
    """

    def __init__(self, signum: int, killed: dict[str, str] | None = None) -> None:
        self.signum = signum
        self.killed = dict(killed or {})
        super().__init__(self.summary())

    def summary(self) -> str:
        """One line: which signal, and which runs were marked KILLED."""
        import signal

        name = signal.Signals(self.signum).name
        if not self.killed:
            return f"build stopped by {name}; no task was running"
        runs = ", ".join(f"{task} run {run_id}" for run_id, task in self.killed.items())
        return f"build stopped by {name}; marked KILLED: {runs}"


class BuildError(LuigiflowError):
    """One or more tasks failed; `failures` maps each failed task to its exception."""

    def __init__(self, failures: dict[Any, BaseException], result: Any = None) -> None:
        self.failures = failures
        self.result = result
        lines = [f"{task}: {type(exc).__name__}: {exc}" for task, exc in failures.items()]
        if not lines:
            lines = ["the Luigi build did not succeed (see the log above for the scheduling error)"]
        super().__init__(
            f"{len(failures)} task(s) failed: " + "; ".join(lines) if failures else lines[0]
        )
