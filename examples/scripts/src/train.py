"""Train a random forest on the features.

Usage: python src/train.py features-dir model-file   (reads params.yaml: train.*)
"""

import os
import pickle
import sys

import yaml
from sklearn.ensemble import RandomForestClassifier


def main():
    with open("params.yaml") as fd:
        params = yaml.safe_load(fd)["train"]

    if len(sys.argv) != 3:
        sys.stderr.write("Arguments error. Usage:\n")
        sys.stderr.write("\tpython train.py features-dir model-file\n")
        sys.exit(1)

    with open(os.path.join(sys.argv[1], "train.pkl"), "rb") as fd:
        x, y = pickle.load(fd)

    clf = RandomForestClassifier(
        n_estimators=params["n_est"],
        min_samples_split=params["min_split"],
        random_state=params["seed"],
        n_jobs=1,
    )
    clf.fit(x, y)

    with open(sys.argv[2], "wb") as fd:
        pickle.dump(clf, fd)


if __name__ == "__main__":
    main()
