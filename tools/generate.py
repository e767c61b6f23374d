#!/usr/bin/env python
"""Sample text from a ``task=lm`` checkpoint (the tokenizer travels inside the checkpoint).

python tools/generate.py path/to/last.ckpt --prompt "def main(" --max-new-tokens 200 --temperature 0.8
python tools/generate.py logs/lm/runs/<run>/checkpoints/last.ckpt --num-samples 3 --top-p 0.9 --seed 1
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

from tasks.app.entry_points import generate

if __name__ == "__main__":
    generate()
