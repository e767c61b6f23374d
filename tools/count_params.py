#!/usr/bin/env python
"""Parameter counts of a configured language model, built on the meta device (no memory, any size).

    python tools/count_params.py model=minimax_text_01     # 456.09B total, 45.95B active
    python tools/count_params.py model=small --json

Arguments are Hydra overrides of ``conf/train.yaml`` (``task=lm`` is implied); ``--json`` prints the counts as JSON.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

from tasks.app.entry_points import count_params

if __name__ == "__main__":
    count_params()
