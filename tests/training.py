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
