"""Scale the columns and keep the most informative ones.

Usage: python src/featurize.py prepared-dir features-dir   (reads params.yaml: featurize.*)
"""

import os
import pickle
import sys

import pandas as pd
import yaml
from sklearn.feature_selection import SelectKBest, f_classif
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def main():
    with open("params.yaml") as fd:
        params = yaml.safe_load(fd)["featurize"]

    if len(sys.argv) != 3:
        sys.stderr.write("Arguments error. Usage:\n")
        sys.stderr.write("\tpython featurize.py prepared-dir features-dir\n")
        sys.exit(1)

    in_path, out_path = sys.argv[1], sys.argv[2]
    train = pd.read_csv(os.path.join(in_path, "train.csv"))
    test = pd.read_csv(os.path.join(in_path, "test.csv"))

    features = make_pipeline(StandardScaler(), SelectKBest(f_classif, k=params["max_features"]))
    x_train = features.fit_transform(train.drop(columns=["label"]), train["label"])
    x_test = features.transform(test.drop(columns=["label"]))

    os.makedirs(out_path, exist_ok=True)
    with open(os.path.join(out_path, "train.pkl"), "wb") as fd:
        pickle.dump((x_train, train["label"].to_numpy()), fd)
    with open(os.path.join(out_path, "test.pkl"), "wb") as fd:
        pickle.dump((x_test, test["label"].to_numpy()), fd)
    sys.stderr.write(f"The output matrix size is {x_train.shape}\n")


if __name__ == "__main__":
    main()
