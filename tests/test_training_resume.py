"""Training runs that survive: a build SIGKILLed mid-epoch resumes into one run holding
the whole curve, exactly as an uninterrupted run; a longer training warm-starts from a
shorter one and follows the same trajectory as training at once; gc keeps what a
finished run came from.

Each training is compared with the same training built uninterrupted on a second store
(a different store, so it is not reused: same identity, same seed)."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from luigiflow._store import schema
from tests.conftest import runs_of

pytestmark = pytest.mark.slow

RESUMED, WARM = schema.RESUMED_TAG, schema.WARM_START_TAG


class Store:
    """A tracking store under its own folder."""

    def __init__(self, folder: pathlib.Path, uri: str) -> None:
        from mlflow import MlflowClient

        self.folder, self.uri, self.ledger = folder, uri, folder / "ledger.txt"
        self.client = MlflowClient(tracking_uri=uri)

    def start(self, task: str, epochs: int, kill_in: int | None = None) -> subprocess.Popen:
        """A build in a subprocess (returned at once: references build side by side)."""
        code = (
            "import luigiflow as lf\n"
            f"from tests.training import {task}\n"
            f"lf.build([{task}(epochs={epochs})], log_level='CRITICAL')\n"
        )
        env = {**os.environ, "MLFLOW_TRACKING_URI": self.uri, "LEDGER": str(self.ledger)}
        env.pop("KILL_IN_EPOCH", None)
        if kill_in is not None:
            env["KILL_IN_EPOCH"] = str(kill_in)
        return subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=self.folder,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def trained(self) -> list[int]:
        """The epochs trained in this store since last asked, in order, across processes."""
        epochs = [int(line) for line in self.ledger.read_text().split()]
        self.ledger.write_text("")
        return epochs

    def finished(self, task: str, epochs: int):
        [run] = [
            r
            for r in runs_of(self.client, task, "FINISHED")
            if r.data.params["epochs"] == str(epochs)
        ]
        return run

    def curve(self, run, key: str = "val_loss") -> list[tuple[int, float, int]]:
        history = self.client.get_metric_history(run.info.run_id, key)
        return sorted((m.step, m.value, m.timestamp) for m in history)

    def weights(self, run) -> list[float]:
        folder = pathlib.Path(run.info.artifact_uri.replace("file://", ""))
        return json.loads((folder / "weights.json").read_text())


def _ended(proc: subprocess.Popen, code: int) -> None:
    _out, err = proc.communicate(timeout=600)
    assert proc.returncode == code, err[-3000:]


@pytest.fixture
def stores(store, tmp_path, template_db, monkeypatch) -> tuple[Store, Store, Store]:
    """The test's store (built on in this process), and two stores for the references
    trained uninterrupted: 6 epochs, and 9 at once (a store each: nothing is reused)."""
    made = [Store(tmp_path, store)]
    for name in ("six", "nine"):
        (tmp_path / name).mkdir()
        shutil.copy(template_db, tmp_path / name / "mlflow.db")
        made.append(Store(tmp_path / name, f"sqlite:///{tmp_path / name / 'mlflow.db'}"))
    monkeypatch.setenv("LEDGER", str(made[0].ledger))
    return made[0], made[1], made[2]


def _build(task: str, epochs: int) -> None:
    import luigiflow as lf
    from tests import training

    lf.build([getattr(training, task)(epochs=epochs)], log_level="CRITICAL")


def _points(curve: list[tuple[int, float, int]]) -> list[tuple[int, float]]:
    return [(step, value) for step, value, _ts in curve]


def _killed_then_resumed(main: Store, six: Store, nine: Store, task: str):
    references = [six.start(task, 6), nine.start(task, 9)]
    _ended(main.start(task, 6, kill_in=3), -9)  # SIGKILL half-way through epoch 3
    [attempt] = runs_of(main.client, task)
    assert main.trained() == [0, 1, 2]
    _build(task, 6)
    assert main.trained() == [3, 4, 5]  # no epoch twice
    for proc in references:
        _ended(proc, 0)
    run, uninterrupted = main.finished(task, 6), six.finished(task, 6)
    origin = json.loads(run.data.tags[RESUMED])
    assert (origin["run_id"], origin["step"]) == (attempt.info.run_id, 2)
    # One run, the whole curve, one point per step (not the killed half epoch's)
    curve = main.curve(run)
    assert _points(curve) == _points(six.curve(uninterrupted))
    assert [step for step, _v, _t in curve] == list(range(6))
    # epochs 0-2 keep the times they were logged at, in the attempt
    assert curve[:3] == main.curve(attempt)[:3]
    assert main.weights(run) == six.weights(uninterrupted)
    # its duration counts the attempt's work up to its checkpoint
    assert float(run.data.tags[schema.DURATION_TAG]) > origin["elapsed_s"] > 0
    return run, attempt


def _warm_start(main: Store, nine: Store, task: str, resumed) -> None:
    import luigiflow as lf
    from tests import training

    plan = lf.plan([getattr(training, task)(epochs=9)])
    assert f"will warm-start from run {resumed.info.run_id} at step 5" in str(plan.to_dict()), plan
    _build(task, 9)  # 6 epochs done, 3 more
    assert main.trained() == [6, 7, 8]
    run, at_once = main.finished(task, 9), nine.finished(task, 9)
    origin = json.loads(run.data.tags[WARM])
    assert (origin["run_id"], origin["step"]) == (resumed.info.run_id, 5)
    # the same trajectory as 9 epochs at once, to the float, at every step
    assert _points(main.curve(run)) == _points(nine.curve(at_once))
    assert main.weights(run) == nine.weights(at_once)
    # the 6-epoch run's saved result is not a point of the 9-epoch curve
    trained = main.client.get_metric_history(run.info.run_id, "epochs_trained")
    assert [m.value for m in trained] == [9.0]


def test_sklearn_training_killed_mid_epoch_resumes_exactly_and_grows(stores, capsys):
    from luigiflow.cli import _inspect

    main, six, nine = stores
    resumed, attempt = _killed_then_resumed(main, six, nine, "SgdTraining")

    _inspect.show(resumed.info.run_id)  # what `luigiflow show` prints
    shown = " ".join(capsys.readouterr().out.split())
    assert f"resumed from run {attempt.info.run_id} after step 2" in shown

    _warm_start(main, nine, "SgdTraining", resumed)

    # Fewer epochs: the 6-epoch run kept its epoch-3 checkpoint, nothing is trained
    _build("SgdTraining", 4)
    assert main.trained() == []
    short = main.finished("SgdTraining", 4)
    assert json.loads(short.data.tags[WARM])["step"] == 3
    at_once = nine.curve(nine.finished("SgdTraining", 9))
    assert _points(main.curve(short)) == _points(at_once)[:4]


def test_torch_training_killed_mid_epoch_resumes_exactly_and_grows(stores):
    pytest.importorskip("torch", reason="the optional `torch` extra is not installed")
    main, six, nine = stores
    resumed, _attempt = _killed_then_resumed(main, six, nine, "TorchTraining")
    _warm_start(main, nine, "TorchTraining", resumed)
