"""A stand-in for dvclive (not installed: it depends on DVC itself), enough for DVC's
example-get-started `src/evaluate.py` to run unchanged. It writes the files dvclive
writes there (`metrics.json`, `plots/sklearn/...`, `plots/images/...`) and models the
one behaviour the tests check: dvclive outside a DVC pipeline (no `DVC_ROOT` in its
environment) saves a DVC experiment into the git repository; this stand-in refuses
instead, so a runner that does not give DVC's environment fails loudly."""

from __future__ import annotations

import json
import os
import sys

from sklearn import metrics


class Live:
    def __init__(self, dir: str = "dvclive", dvcyaml: object = "dvc.yaml", **_: object) -> None:
        if not os.environ.get("DVC_ROOT"):
            sys.exit(
                "dvclive stand-in: DVC_ROOT is not set: real dvclive would save a DVC "
                "experiment (refs/exps, dvc.lock) into the git repository"
            )
        print(f"dvclive: DVC_ROOT={os.environ['DVC_ROOT']} DVC_STAGE={os.environ.get('DVC_STAGE')}")
        self.dir = dir
        self.summary: dict = {}

    def __enter__(self) -> Live:
        return self

    def __exit__(self, *exc: object) -> None:
        with open(os.path.join(self.dir, "metrics.json"), "w") as fd:
            json.dump(self.summary, fd, indent=4)

    def _write(self, kind: str, name: str, data: dict) -> None:
        path = os.path.join(self.dir, "plots", kind, name + ".json")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as fd:
            json.dump(data, fd, indent=4)

    def log_sklearn_plot(self, kind, labels, predictions, name=None, **kwargs) -> None:
        name = name or kind
        if kind == "roc":
            fpr, tpr, thr = metrics.roc_curve(labels, predictions, **kwargs)
            rows = [
                {"fpr": f, "tpr": t, "threshold": h} for f, t, h in zip(fpr, tpr, thr, strict=True)
            ]
            self._write("sklearn", name, {"roc": rows})
        elif kind == "precision_recall":
            prec, rec, thr = metrics.precision_recall_curve(labels, predictions, **kwargs)
            rows = [
                {"precision": p, "recall": r, "threshold": h}
                for p, r, h in zip(prec, rec, thr, strict=False)
            ]
            self._write("sklearn", name, {"precision_recall": rows})
        elif kind == "confusion_matrix":
            rows = [
                {"actual": str(a), "predicted": str(p)}
                for a, p in zip(labels, predictions, strict=True)
            ]
            self._write("sklearn", name, rows)
        else:
            raise ValueError(f"dvclive stand-in: no plot kind {kind!r}")

    def log_image(self, name: str, fig) -> None:
        path = os.path.join(self.dir, "plots", "images", name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fig.savefig(path)
