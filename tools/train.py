#!/usr/bin/env python
"""Train and test a task composed by Hydra.

    python tools/train.py task=vision model.ca=mca
    python tools/train.py -m task=vision model.ca=none,se,eca,mca
    python tools/train.py task=vision model.ca=mca ckpt_path=last        # resume the newest run
    python tools/train.py -m hparams_search=vision_optuna                # Optuna sweep

Configuration lives in ``conf/`` (``conf/train.yaml`` is the root). A configuration mistake (an unknown component
name, a missing dataset, a value of the wrong type) ends the run with one paragraph naming the key and the valid
choices, and exit status 2.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

from tasks.app.entry_points import train

if __name__ == "__main__":
    train()
