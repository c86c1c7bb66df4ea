"""Which FINISHED run a training warm-starts from (the same answers on both stores: the
SQL path reads three tags, the others read whole runs), and what plan says of it."""

from __future__ import annotations

import json

import luigi

import luigiflow as lf
from luigiflow._engine import checkpoints, warm_start
from luigiflow._store import schema
from luigiflow._store.port import MetricPoint
from tests.conftest import add_run


class Grow(lf.MlflowTask):
    artifacts = {"w": "w.json"}
    epochs = lf.StepsParameter(default=10)
    lr = luigi.FloatParameter(default=0.1)

    def run_task(self) -> None:
        self.save({"w": [0.0]})


def _trained(store, task: Grow, newest_step: int, kept: tuple[int, ...] = ()) -> str:
    record = {"file": f"luigiflow/checkpoints/step-{newest_step:09d}.pkl", "sha256": "x"}
    tags = {
        **warm_start.start_tags(task),
        schema.CHECKPOINT_TAG: json.dumps({**record, "step": newest_step}),
        schema.KEPT_CHECKPOINTS_TAG: json.dumps({str(s): {**record, "step": s} for s in kept}),
    }
    return add_run(store, task, tags=tags).info.run_id


def test_longer_training_starts_from_the_longest_shorter_run(run_store):
    five = _trained(run_store, Grow(epochs=5), 4)
    ten = _trained(run_store, Grow(epochs=10), 9)
    _trained(run_store, Grow(epochs=12, lr=0.2), 11)  # another line: never
    exp = run_store.experiment_id("Grow")
    found = warm_start.sources(Grow(epochs=15), run_store, exp)
    assert [(s.run_id, s.step, s.steps) for s in found] == [(ten, 9, 10), (five, 4, 5)]
    assert checkpoints.starting_point(Grow(epochs=15), run_store) == (
        f"will warm-start from run {ten} at step 9"
    )


def test_shorter_training_starts_only_from_a_checkpoint_kept_at_its_last_step(run_store):
    ten = _trained(run_store, Grow(epochs=10), 9, kept=(3, 5))
    exp = run_store.experiment_id("Grow")
    [exact] = warm_start.sources(Grow(epochs=6), run_store, exp)
    assert (exact.run_id, exact.step) == (ten, 5)
    assert warm_start.sources(Grow(epochs=5), run_store, exp) == []  # nothing kept at 4
    assert checkpoints.starting_point(Grow(epochs=5), run_store) is None


def test_metric_points_keep_their_steps_and_times(run_store):
    run_id = add_run(run_store, Grow(), status=None).info.run_id
    points = [MetricPoint("loss", 1.0 / (s + 1), 1_700_000_000_000 + s, s) for s in range(3)]
    run_store.log_metric_points(run_id, points)
    assert sorted(run_store.metric_history(run_id), key=lambda p: p.step) == points
