"""Write the submission of a trained experiment: `python predict.py [CONFIG] [--set KEY=VALUE ...]`.

Loads every fold model from models/<name>/, averages folds x TTA views and writes
submissions/<name>.csv after checking it. Same as `python -m lresizervit predict`.
"""

import sys

from lresizervit.cli import main

if __name__ == "__main__":
    sys.exit(main(["predict", *sys.argv[1:]]))
