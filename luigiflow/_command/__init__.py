"""Command tasks: an existing script or program as a task recorded as one MLflow run.

`task` says what the command is (files, inputs, outputs, identity); `run` executes it
inside the task's active run.
"""

from __future__ import annotations

from luigiflow._command.task import CommandTask

__all__ = ["CommandTask"]
