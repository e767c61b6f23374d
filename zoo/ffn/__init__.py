"""Feed-forward blocks, registered in ``FFN``.

Contract::

    cls(dim, hidden_dim, *, device=None, dtype=None, **kw) -> nn.Module
    module(x [..., dim]) -> [..., dim]                       # same dtype as x (dense: autocast's under autocast)

Sparse blocks also leave, after each forward, the statistics the task logs and the loss term it adds:
``module.loss`` (the weighted auxiliary losses, a scalar with grad), ``aux_loss``, ``z_loss``, ``expert_load``
``[E]`` and ``dropped_fraction`` (see :class:`MoE`). Weights get a simple default initialisation; the model
re-initialises them.

========================= ==========================================================================================
name                      component
========================= ==========================================================================================
``dense`` (``swiglu``)    ``w2( SiLU(w1·x) ⊙ w3·x )``, bias-free (MiniMax-01's expert FFN, Llama's MLP)
``moe``                   MiniMax-01's mixture of E SwiGLU experts (32, top-2, no shared expert): fp32 softmax
                          router, top-k weights renormalised, Switch or paper load-balancing loss, router z-loss,
                          optional capacity with token drop; experts by fused Triton kernels around
                          ``grouped_mm`` (``impl="fused"``), plain ``grouped_mm`` or a per-expert loop;
                          parameters named and laid out as Hugging Face's ``MiniMaxSparseMoeBlock``
========================= ==========================================================================================
"""

from zoo.ffn.dense import SwiGLU
from zoo.ffn.moe import (
    AUX_LOSS_TYPES,
    IMPLS,
    MoE,
    MoEExperts,
    capacity_mask,
    expert_capacity,
    fused_available,
    grouped_mm_available,
    load_balancing_loss,
    router_z_loss,
)

__all__ = [
    "AUX_LOSS_TYPES",
    "IMPLS",
    "MoE",
    "MoEExperts",
    "SwiGLU",
    "capacity_mask",
    "expert_capacity",
    "fused_available",
    "grouped_mm_available",
    "load_balancing_loss",
    "router_z_loss",
]
