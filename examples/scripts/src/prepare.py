"""Split the raw table into train and test sets.

Usage: python src/prepare.py data-file   (reads params.yaml: prepare.split, prepare.seed)
"""

import os
import sys

import pandas as pd
import yaml


def main():
    with open("params.yaml") as fd:
        params = yaml.safe_load(fd)["prepare"]

    if len(sys.argv) != 2:
        sys.stderr.write("Arguments error. Usage:\n")
        sys.stderr.write("\tpython prepare.py data-file\n")
        sys.exit(1)

    data = pd.read_csv(sys.argv[1])
    test = data.sample(frac=params["split"], random_state=params["seed"])
    train = data.drop(test.index)

    output = os.path.join("data", "prepared")
    os.makedirs(output, exist_ok=True)
    train.to_csv(os.path.join(output, "train.csv"), index=False)
    test.to_csv(os.path.join(output, "test.csv"), index=False)
    print(f"prepared {len(train)} train rows and {len(test)} test rows")


if __name__ == "__main__":
    main()
