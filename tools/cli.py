#!/usr/bin/env python
"""LightningCLI over the same tasks, datamodules and registries as ``tools/train.py``.

    python tools/cli.py fit --config conf/cli/vision.yaml --model.ca mca
    python tools/cli.py fit --model VisionTask --model.ca eca --data FashionMNISTDataModule --trainer.max_epochs 1
    python tools/cli.py fit --config conf/cli/vision.yaml --print_config

``conf/cli/*.yaml`` are written from the Hydra presets by ``tools/hydra2cli.py``, so both front ends start from
the same values. Component choices (``--model.ca``, ``--model.backbone``) are registry names, exactly as in Hydra.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

from tasks.app.entry_points import cli

if __name__ == "__main__":
    cli()
