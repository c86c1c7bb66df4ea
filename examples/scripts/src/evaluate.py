"""Score the model on train and test; write metrics and an ROC plot like dvclive does.

Usage: python src/evaluate.py model-file features-dir
Writes eval/metrics.json ({"roc_auc": {"train": .., "test": ..}, ...}) and eval/plots/.
"""

import json
import os
import pickle
import sys

from sklearn import metrics

EVAL_PATH = "eval"


def main():
    if len(sys.argv) != 3:
        sys.stderr.write("Arguments error. Usage:\n")
        sys.stderr.write("\tpython evaluate.py model-file features-dir\n")
        sys.exit(1)

    with open(sys.argv[1], "rb") as fd:
        model = pickle.load(fd)

    summary = {"avg_prec": {}, "roc_auc": {}}
    plots = os.path.join(EVAL_PATH, "plots")
    os.makedirs(plots, exist_ok=True)
    for split in ("train", "test"):
        with open(os.path.join(sys.argv[2], f"{split}.pkl"), "rb") as fd:
            x, y = pickle.load(fd)
        predictions = model.predict_proba(x)[:, 1]
        summary["avg_prec"][split] = metrics.average_precision_score(y, predictions)
        summary["roc_auc"][split] = metrics.roc_auc_score(y, predictions)
        fpr, tpr, threshold = metrics.roc_curve(y, predictions)
        points = [
            {"fpr": float(f), "tpr": float(t), "threshold": float(h)}
            for f, t, h in zip(fpr, tpr, threshold, strict=True)
        ]
        with open(os.path.join(plots, f"roc-{split}.json"), "w") as fd:
            json.dump({"roc": points}, fd, indent=1)

    with open(os.path.join(EVAL_PATH, "metrics.json"), "w") as fd:
        json.dump(summary, fd, indent=2)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
