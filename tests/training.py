"""Tasks of a training loop: per-epoch metrics, checkpoints, autologging."""

from __future__ import annotations

import os
import signal

import luigi

import luigiflow as lf


class Epochs(lf.MlflowTask):
    """Trains for `epochs` epochs, checkpointing after each; resumes an earlier attempt.

    KILL_AT_EPOCH=n kills the process (SIGKILL, as the OOM killer would) before epoch n.
    LEDGER lists the epochs actually trained, across processes.
    """

    artifacts = {"weights": "weights.json"}
    epochs = luigi.IntParameter(default=20)

    def run_task(self) -> None:
        resumed = self.last_checkpoint()
        weights, start = (resumed.state, resumed.step + 1) if resumed else ([0.0], 0)
        for epoch in range(start, self.epochs):
            if os.environ.get("KILL_AT_EPOCH") == str(epoch):
                os.kill(os.getpid(), signal.SIGKILL)
            weights = [weights[0] + 1.0]
            with open(os.environ["LEDGER"], "a", encoding="utf-8") as f:
                f.write(f"{epoch}\n")
            self.log_metric("loss", 1.0 / (epoch + 1), step=epoch)
            self.checkpoint(weights, epoch)
        self.save({"weights": weights}, metrics={"loss": 0.0125, "epochs_trained": self.epochs})


class Autologged(lf.MlflowTask):
    """A scikit-learn model fitted under mlflow.sklearn.autolog(), whose task parameters
    share names with the estimator's (`C`) and differ in text (`hidden_layer_sizes`)."""

    artifacts = {"score": "score.json"}
    C = luigi.FloatParameter(default=0.5)
    hidden_layer_sizes = luigi.TupleParameter(default=(16,))

    def run_task(self) -> None:
        import mlflow
        from sklearn.datasets import make_classification
        from sklearn.linear_model import LogisticRegression
        from sklearn.neural_network import MLPClassifier

        mlflow.sklearn.autolog(log_models=False)
        try:
            X, y = make_classification(n_samples=60, n_features=4, random_state=0)
            LogisticRegression(C=1.0).fit(X, y)
            mlp = MLPClassifier(hidden_layer_sizes=tuple(self.hidden_layer_sizes), max_iter=5)
            mlp.fit(X, y)
        finally:
            mlflow.sklearn.autolog(disable=True)
        self.save({"score": float(mlp.score(X, y))})


def _kill_mid_epoch(task: lf.MlflowTask, epoch: int) -> None:
    """KILL_IN_EPOCH=n: SIGKILL half-way through epoch n, after logging a point of it."""
    if os.environ.get("KILL_IN_EPOCH") == str(epoch):
        task.log_metric("val_loss", -1.0, step=epoch)  # a half epoch's point: never copied
        os.kill(os.getpid(), signal.SIGKILL)


def _note_epoch(epoch: int) -> None:
    with open(os.environ["LEDGER"], "a", encoding="utf-8") as f:
        f.write(f"{epoch}\n")


class SgdTraining(lf.MlflowTask):
    """scikit-learn's SGDClassifier trained with partial_fit, epoch by epoch: each epoch
    shuffles the samples with NumPy's global RNG and the batch order with Python's, so a
    resume is exact only when both random states come back with the checkpoint. Keeps
    the checkpoint of every odd epoch (a shorter training starts from it)."""

    artifacts = {"weights": "weights.json"}
    epochs = lf.StepsParameter(default=6)

    def run_task(self) -> None:
        import random

        import numpy as np
        from sklearn.datasets import make_classification
        from sklearn.linear_model import SGDClassifier
        from sklearn.metrics import log_loss

        X, y = make_classification(n_samples=240, n_features=6, random_state=0)
        resumed = self.last_checkpoint()
        if resumed:
            model, start = resumed.state, resumed.step + 1
        else:
            model, start = SGDClassifier(loss="log_loss", learning_rate="constant", eta0=0.05), 0
        for epoch in range(start, self.epochs):
            order = np.random.permutation(len(X))
            batches = [order[i : i + 30] for i in range(0, len(X), 30)]
            random.shuffle(batches)
            for i, batch in enumerate(batches):
                if i == len(batches) // 2:
                    _kill_mid_epoch(self, epoch)
                model.partial_fit(X[batch], y[batch], classes=[0, 1])
            _note_epoch(epoch)
            self.log_metric("val_loss", log_loss(y, model.predict_proba(X)), step=epoch)
            self.checkpoint(model, epoch, keep=epoch % 2 == 1)
        weights = [*model.coef_.ravel().tolist(), *model.intercept_.tolist()]
        self.save({"weights": weights}, metrics={"epochs_trained": self.epochs})


class TorchTraining(lf.MlflowTask):
    """A small PyTorch network (dropout, shuffled mini-batches: both draw from PyTorch's
    RNG) trained epoch by epoch on CPU, checkpointing model and optimizer."""

    artifacts = {"weights": "weights.json"}
    epochs = lf.StepsParameter(default=6)

    def run_task(self) -> None:
        import torch

        # luigiflow seeds PyTorch before run_task only when it is already imported: a
        # task that imports it here seeds it itself (task.seed does not depend on epochs)
        torch.manual_seed(self.seed)
        torch.set_num_threads(1)
        gen = torch.Generator().manual_seed(0)  # the data is fixed; training draws globally
        X = torch.randn(240, 6, generator=gen)
        y = (X[:, 0] + 0.5 * X[:, 1] > 0).float().unsqueeze(1)
        model = torch.nn.Sequential(
            torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(16, 1)
        )
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        # After the model's random initialization: the random states it restores are
        # those the loop below draws from next.
        resumed = self.last_checkpoint()
        start = 0
        if resumed:
            model.load_state_dict(resumed.state["model"])
            opt.load_state_dict(resumed.state["opt"])
            start = resumed.step + 1
        loss_fn = torch.nn.BCEWithLogitsLoss()
        for epoch in range(start, self.epochs):
            model.train()
            order = torch.randperm(len(X))
            for i in range(0, len(X), 30):
                if i == 120:
                    _kill_mid_epoch(self, epoch)
                batch = order[i : i + 30]
                opt.zero_grad()
                loss_fn(model(X[batch]), y[batch]).backward()
                opt.step()
            _note_epoch(epoch)
            model.eval()
            with torch.no_grad():
                self.log_metric("val_loss", float(loss_fn(model(X), y)), step=epoch)
            self.checkpoint({"model": model.state_dict(), "opt": opt.state_dict()}, epoch)
        weights = [w for p in model.parameters() for w in p.detach().ravel().tolist()]
        self.save({"weights": weights}, metrics={"epochs_trained": self.epochs})


class Stumbling(lf.MlflowTask):
    """Checkpoints every epoch; raises at epoch FAIL_AT_EPOCH (a FAILED attempt)."""

    artifacts = {"weights": "weights.json"}
    epochs = luigi.IntParameter(default=4)

    def run_task(self) -> None:
        resumed = self.last_checkpoint()
        weights, start = (resumed.state, resumed.step + 1) if resumed else (0.0, 0)
        for epoch in range(start, self.epochs):
            if os.environ.get("FAIL_AT_EPOCH") == str(epoch):
                raise RuntimeError(f"stumbled at epoch {epoch}")
            weights += 1.0
            self.log_metric("loss", 1.0 / (epoch + 1), step=epoch)
            self.checkpoint(weights, epoch)
        self.save({"weights": weights})
