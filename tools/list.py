#!/usr/bin/env python
"""List registered components: ``python tools/list.py [kind] [pattern]``.

python tools/list.py channel_attention 'mca*'
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

from tasks.app.entry_points import list_components

if __name__ == "__main__":
    list_components()
