"""Write the submission of one or more trained experiments:
`python predict.py [EXP ...] [--out FILE] [--data-dir DIR] [--tta MODE] [--svr] [--set KEY=VALUE ...]`.

Each EXP is a config YAML or a models/<exp>/ folder. Loads every fold model, averages folds x TTA views,
blends several experiments (and SVR heads) with weights fitted on their OOF predictions, and writes
submissions/<name>.csv after checking it. Same as `python -m lresizervit predict`.
"""

import sys

from lresizervit.cli import main

if __name__ == "__main__":
    sys.exit(main(["predict", *sys.argv[1:]]))
