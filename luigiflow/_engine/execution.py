"""Executing one task as one run.

The life of one run:
  1. look once more for a FINISHED run of this identity (another worker may have
     finished it since scheduling) and stop if there is one;
  2. create the run with identity, lineage and provenance tags in one call and make
     it the active MLflow run, so `mlflow.log_*`, autologging and system metrics land on it;
  3. seed `random`/NumPy/PyTorch from the identity and call `run_task()`;
  4. check every declared artifact was saved, then write params, metrics and
     artifact records in one `log_batch` and only then mark the run FINISHED.
Any exception marks the run FAILED with its traceback stored as an artifact.

What the run is created with (tags, name, provenance files) is `run_facts`'s; what it
records of its upstream runs when it finishes is `run_lineage`'s.
"""

from __future__ import annotations

import contextlib
import signal
import time
import traceback
from collections.abc import Iterator, Mapping
from typing import Any

from luigiflow._core import failures, provenance, redaction
from luigiflow._core.identity import canonical_json
from luigiflow._engine import (
    checkpoints,
    cutoff,
    held,
    interrupts,
    luigi_compat,
    run_facts,
    run_lineage,
    run_names,
)
from luigiflow._engine import session as _session
from luigiflow._engine.protocol import RUN_STATE, TrackedTask, bind_run

# `_ops` reads a task's data files as `execution.data_files` (plan's reasons).
from luigiflow._engine.run_facts import data_files as data_files
from luigiflow._errors import ArtifactError, RunStoppedError, TrackingError, TrialPrunedError
from luigiflow._store import client, current, liveness, mlflow_compat, schema, signatures
from luigiflow._store.artifacts import RunWriter
from luigiflow._store.port import DatasetRef, RunStore
from luigiflow._store.records import FAILED, FINISHED, KILLED, RunRecord


def execute(task: TrackedTask, may_set_aside: bool = True) -> Iterator[Any] | None:
    """Run `task` as one run, or reuse a run another worker finished or is finishing.

    Where the build lets it (`Session.set_aside_held`), a task another worker holds is
    not waited for here: this returns what `run()` yields to Luigi instead (see held).
    """
    if luigi_compat.in_worker_process():
        interrupts.die_with_parent()
    session = _session.of(task)
    exp_id = session.experiment_id(task.get_experiment_name())
    # An interrupt marks the run KILLED and removes its staging on the way out.
    with interrupts.task_body(luigi_compat.in_worker_process()):
        holder = _execute(task, session, exp_id, may_set_aside and session.set_aside_held)
    if holder is None:
        return None
    return held.set_aside(
        exp_id, task.identity, holder, task.task_id, lambda: execute(task, may_set_aside=False)
    )


def _execute(
    task: TrackedTask, session: _session.Session, exp_id: str, may_set_aside: bool
) -> str | None:
    """The task's one execution; when it is set aside instead (`may_set_aside`), the id
    of the other worker's run that holds it."""
    store = session.store
    # Another worker may have finished this identity since Luigi scheduled it, or be
    # running it now: its live RUNNING run is a lease (see claim).
    asked = session.completion.negative_answer_ms(task)
    existing = session.recheck.existing_run(exp_id, task.identity, asked)
    holder = None if existing else session.recheck.held_elsewhere(exp_id, task.identity)
    if holder is not None:
        if may_set_aside:
            return holder
        existing = session.claim.settle(exp_id, task.identity, None).finished
    if existing is not None:
        _reuse(task, session, existing)
        return None
    upstream_runs = task.upstream_runs()
    # An upstream re-ran with byte-identical outputs: the results are copied, not computed.
    source = cutoff.equivalent_run(task, session, exp_id, upstream_runs)
    # Values of secret-looking parameters never reach the store (see _core/redaction).
    params_json = canonical_json(redaction.redact_encoded(task.encoded_params()))
    tags = run_facts.start_tags(task, upstream_runs, params_json)
    run_name = run_names.name_for_run(task, session, exp_id, params_json)
    client.refuse_writes_if_read_only(store.uri, f"creating a run of {task!r}")
    if may_set_aside and session.recheck.crowded:
        # Other workers build this graph too: one look right before creating spares a run
        # that would yield (KILLED) to one of theirs created since the re-check's last look.
        existing = session.recheck.exact(exp_id, task.identity)
        if existing is not None:
            _reuse(task, session, existing)
            return None
        holder = session.recheck.held_elsewhere(exp_id, task.identity)
        if holder is not None:
            return holder
    while True:
        try:
            active = _start(task, store, exp_id, run_name, tags)
        except Exception as exc:
            if not mlflow_compat.is_inactive_experiment_error(exc):
                raise
            # Deleted (in the UI, by `mlflow experiments delete`) since this build
            # resolved it: never restored, its runs go on in its successor.
            exp_id = session.experiment_id(task.get_experiment_name(), fresh=True)
            active = _start(task, store, exp_id, run_name, tags)
        run_id = active.info.run_id
        session.record("started", task.task_id, run_id)
        heartbeat = liveness.Heartbeat(store, run_id)
        try:
            lease = signatures.sign_lease(run_id, exp_id, tags)
            for key, value in lease.items():  # under a team key others wait only on signed
                store.set_tag(run_id, key, value)  # leases: sign before settling
            settled = session.claim.settle(
                exp_id, task.identity, active, wait_after_yielding=not may_set_aside
            )
        except BaseException as exc:
            heartbeat.stop()
            with interrupts.shielded():
                _mark_ended(store, run_id, exc, run_facts.secrets_of(task))
            raise
        if settled.proceed:
            break
        heartbeat.stop()  # our run was marked KILLED: another worker's run does the work
        mlflow_compat.end_active_run_if(run_id, KILLED)
        if settled.yielded_to is not None:  # set aside until the run we yielded to ends
            return settled.yielded_to.info.run_id
        if settled.finished is not None:
            _reuse(task, session, settled.finished)
            return None
        # The run we yielded to failed or its worker died: claim the task again.
    _run(
        task,
        session,
        active.info.artifact_uri,
        run_id,
        heartbeat,
        params_json,
        exp_id,
        {**tags, schema.RUN_NAME_TAG: run_name},  # MLflow's own tag: the description's title
        upstream_runs,
        source,
    )
    return None


def _start(
    task: TrackedTask, store: RunStore, exp_id: str, run_name: str, tags: dict[str, str]
) -> RunRecord:
    """Create the run with its parameters and make it MLflow's active run.

    Parameters are there from the start: they show while the task runs, and autologging
    that later logs a parameter of the same name with another text only loses its own
    value (MLflow params are write-once; autolog catches the refusal)."""
    with client.translate_errors(f"creating a run of {task!r}", store.uri):
        return mlflow_compat.start_active_run(
            lambda: client.get_client(store.uri),
            store,
            exp_id,
            run_name,
            tags,
            run_facts.display_params(task),
            schema.PARENT_RUN_TAG,
        )


def _reuse(task: TrackedTask, session: _session.Session, run: RunRecord) -> None:
    bind_run(task, run)
    read_at = session.recheck.read_at(run.info.run_id)
    session.completion.note_complete(task, run.info.run_id, run, read_at)
    session.record("reused", task.task_id, run.info.run_id)


def _run(
    task: TrackedTask,
    session: _session.Session,
    artifact_uri: str,
    run_id: str,
    heartbeat: liveness.Heartbeat,
    params_json: str,
    exp_id: str,
    tags: dict[str, str],
    upstream_runs: Mapping[str, RunRecord],
    cutoff_source: RunRecord | None = None,
) -> None:
    """The work itself, in our claimed run (or, cut off, the results of `cutoff_source`)."""
    started = time.time()
    writer = RunWriter(run_id, artifact_uri, session.store.uri, exp_id, tags)
    task.__dict__[RUN_STATE] = writer
    try:
        run_facts.write_provenance_files(task, writer, params_json)
        if cutoff_source is not None:
            cutoff.replay(task, cutoff_source)
        else:
            if task.seed_random:
                provenance.seed_everything(task.seed)
            with interrupts.exit_raises(repr(task)):
                task.run_task()
        heartbeat.stop()
        _finish(task, writer, started, upstream_runs)
    except BaseException as exc:
        # A second Ctrl-C (a wrapper such as `timeout` forwards it) must not cut this
        # short: a run left active would be ended FINISHED by MLflow at exit.
        with interrupts.shielded():
            heartbeat.stop()
            _fail(task, writer, exc)
        raise
    finally:
        task.__dict__.pop(RUN_STATE, None)
        writer.cleanup()
    # Downstream tasks look this run up afresh before consuming it (see completion).
    bind_run(task, None)
    session.completion.note_complete(task, run_id)
    # A cut-off run computed nothing: for the build it is reused work (see cutoff).
    session.record("reused" if cutoff_source is not None else "executed", task.task_id, run_id)


def _finish(
    task: TrackedTask, writer: RunWriter, started: float, upstream: Mapping[str, RunRecord]
) -> None:
    missing = [n for n in task.artifacts if n not in writer.saved]
    missing += [n for n in getattr(task, "models", {}) if n not in writer.models]
    if missing:
        raise ArtifactError(
            f"{task.get_task_family()} (run {writer.run_id}) did not save declared "
            f"artifact(s) {', '.join(map(repr, missing))}; call self.save() with them"
        )
    note = run_lineage.description(task, writer.run_id, upstream, writer.tags, writer.experiment_id)
    if len(note) > schema.MAX_TAG_LENGTH:
        # A wide fan-in: the whole lineage goes in a file, the description lists what fits.
        writer.write_extra(schema.LINEAGE_FILE, run_lineage.lineage_json(upstream))
        note = run_lineage.description(
            task, writer.run_id, upstream, writer.tags, writer.experiment_id, fits=True
        )
    writer.upload()
    took = time.time() - started + checkpoints.carried_s(writer.tags)
    store = current.get_store(writer.uri)
    inputs = run_lineage.dataset_inputs(upstream) + run_lineage.data_inputs(writer.tags)
    with client.translate_errors(f"finishing run {writer.run_id} of {task!r}", writer.uri):
        # Values user code logged asynchronously land before the run ends.
        client.flush_async_logging(writer.uri)
    try:
        _record(task, writer, store, took, note, inputs)
    except RunStoppedError as exc:  # ended by another worker while this one was paused
        raise RunStoppedError(f"{task!r}: {exc}") from None
    except Exception as exc:
        # (The text first: asking whether it is MLflow's error would import mlflow.)
        deleted = "must be in the 'active' state" in str(exc)
        if not deleted or not mlflow_compat.is_inactive_experiment_error(exc):
            raise
        # The experiment was deleted while the task ran (its runs went with it): the run
        # goes on in the successor experiment, where the next build would put it.
        session = _session.of(task)
        successor = session.experiment_id(task.get_experiment_name(), fresh=True)
        adopt = getattr(store, "adopt_run", None)
        if adopt is None or not adopt(writer.run_id, successor):
            raise TrackingError(
                f"{task!r}: experiment {task.get_experiment_name()!r} was deleted while the "
                f"task ran, and run {writer.run_id} with it; build again to run it in the "
                "experiment that succeeds it"
            ) from None
        writer.experiment_id = successor  # the signature and the links name it
        note = run_lineage.description(task, writer.run_id, upstream, writer.tags, successor)
        if len(note) > schema.MAX_TAG_LENGTH:  # its lineage file is already written
            note = run_lineage.description(
                task, writer.run_id, upstream, writer.tags, successor, fits=True
            )
        _record(task, writer, store, took, note, inputs)
    # Off MLflow's active-run stack (user code may have ended the run itself already).
    if not mlflow_compat.pop_active_run(writer.run_id):
        mlflow_compat.end_active_run_if(writer.run_id, FINISHED)


def _record(
    task: TrackedTask,
    writer: RunWriter,
    store: RunStore,
    took: float,
    note: str,
    inputs: list[DatasetRef],
) -> None:
    """Results and status in one write (one transaction on the embedded store)."""
    tags = writer.record_tags()
    # A resumed (or warm-started) run's state took the earlier run's work too.
    tags[schema.DURATION_TAG] = f"{took:.3f}"
    tags[schema.NOTE_TAG] = note
    # Saved metrics go at the highest step logged live and strictly later, so they are
    # the values the run shows (MLflow keeps the value of the highest step, then time).
    store.finish_run(
        writer.run_id,
        FINISHED,
        metrics=writer.metrics,
        steps=writer.steps,
        timestamp_ms=max(int(time.time() * 1000), writer.last_metric_ms + 1),
        tags=tags,
        inputs=inputs,
    )


def _fail(task: TrackedTask, writer: RunWriter, exc: BaseException) -> None:
    if isinstance(exc, RunStoppedError):
        # Another worker ended the run (KILLED, with its reason): leave it as it is, and
        # off MLflow's active-run stack, whose exit hook would end it FINISHED.
        with contextlib.suppress(Exception):
            mlflow_compat.end_active_run_if(writer.run_id, KILLED)
        _session.of(task).record_failure(task.task_id, exc, writer.run_id)
        return
    store = current.get_store(writer.uri)
    # Best effort, each write on its own: the store may be the very thing that failed,
    # and the run must end FAILED even when the traceback upload does not get through.
    secrets = run_facts.secrets_of(task)
    with contextlib.suppress(Exception):
        text = redaction.scrub("".join(traceback.format_exception(exc)), secrets)
        store.log_text(writer.run_id, text, schema.TRACEBACK_FILE)
    _mark_ended(store, writer.run_id, exc, secrets)
    _session.of(task).record_failure(task.task_id, exc, writer.run_id)


def _mark_ended(
    store: RunStore, run_id: str, exc: BaseException, secrets: list[str] | None = None
) -> None:
    """Mark a run whose task raised FAILED (KILLED for an interrupt), never FINISHED.

    Through the store as well as MLflow's active-run stack: user code may have ended
    the run itself (`mlflow.end_run()`, which marks it FINISHED) before raising.
    """
    # A pruned trial was stopped on purpose, not broken: KILLED, as an interrupt is.
    stopped = KeyboardInterrupt | SystemExit | TrialPrunedError
    status = KILLED if isinstance(exc, stopped) else FAILED
    if isinstance(exc, KeyboardInterrupt):
        reason = f"{schema.INTERRUPTED} ({signal.Signals(interrupts.signum_of(exc)).name})"
    else:
        reason = redaction.scrub(f"{type(exc).__name__}: {exc}", secrets or [])
    tags = {
        schema.ERROR_TAG: reason[: schema.MAX_TAG_LENGTH],
        schema.ERROR_AT_TAG: failures.user_location(exc),  # file:line in the user's code
    }
    with contextlib.suppress(Exception):
        store.log_batch(run_id, tags=tags)
    with contextlib.suppress(Exception):
        mlflow_compat.end_active_run_if(run_id, status)
    with contextlib.suppress(Exception):
        store.terminate(run_id, status)
