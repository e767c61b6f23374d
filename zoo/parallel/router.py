"""The MoE router's load statistics over every data-parallel rank (MiniMax's "global router")."""

from __future__ import annotations

from typing import Any

import torch.distributed as dist


def use_global_router_statistics(model: Any, group: dist.ProcessGroup | None) -> int:
    """Make every MoE layer of ``model`` (``model.moe_layers()``) count its expert assignments over ``group``.

    The load-balancing loss ``E · Σ_e f_e · P_e`` then uses ``f`` (the detached assignment fractions) of the
    global batch, while ``P`` (the mean router probability, which carries the gradient) stays local. Data-parallel
    gradient averaging over equal local batches then gives exactly the gradient of the global batch's loss.

    Returns:
        the number of MoE layers set.
    """
    layers = model.moe_layers()
    for layer in layers:
        layer.balance_group = group
    return len(layers)
