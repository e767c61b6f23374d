#!/usr/bin/env python
"""Consolidate a sharded checkpoint of ``strategy=fsdp2`` into one file.

    python tools/consolidate.py logs/lm/runs/<time>/checkpoints/last.ckpt --output model.safetensors \\
        --ckpt last_full.ckpt --hf hf_export/

``--output``: the model's weights (safetensors); ``--ckpt``: a single-file Lightning checkpoint (for
``tools/generate.py`` and ``ckpt_path=``); ``--hf``: a ``transformers`` MiniMax export (the hybrid LM).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

from tasks.app.entry_points import consolidate

if __name__ == "__main__":
    consolidate()
