"""Every extension point of the zoo, one registry per kind of component.

Configs choose components by these registry names (``model.ca=mca``), never by import paths. Each kind's contract
is documented in the docstring of the package that holds its built-ins.

============================  =====================================================================================
registry                      contract
============================  =====================================================================================
``CHANNEL_ATTENTION``         ``cls(channels, *, device=None, dtype=None, **kw)``; ``[B, C, H, W] → [B, C, H, W]``
                              (timm's ``attn_layer`` convention), see :mod:`zoo.channel_attention`
``BACKBONE``                  ``fn(*, num_classes, in_chans, ca, ca_kwargs, **kw) → nn.Module`` producing logits,
                              see :mod:`zoo.backbones`
``ATTENTION``                 token mixers: ``cls(dim, num_heads, *, layer_idx, num_layers, **kw)``
``FFN``                       ``cls(dim, hidden_dim, *, device=None, dtype=None, **kw)``; ``[..., dim] → [..., dim]``;
                              sparse blocks leave ``.loss`` (aux terms to add) and statistics, see :mod:`zoo.ffn`
``MODEL``                     ``cls(config, *, device=None, dtype=None)``: whole networks (language models, see
                              :mod:`zoo.models`; the vision-language model ``vlm``, see :mod:`zoo.vision_language`)
``VISION_TOWER``              image encoders: ``cls(*, image_size, **kw)``; pixels ``[N, 3, S, S] → [N, P, C]`` patch
                              features (no prefix tokens, no pooling); attributes ``num_patches`` (P),
                              ``hidden_size`` (C), ``image_size``; ``blocks()``, see :mod:`zoo.vision_language`
``PROJECTOR``                 vision → language adapters: ``cls(in_dim, out_dim)``; ``[..., C] → [..., d]``, see
                              :mod:`zoo.vision_language`
``OBJECTIVE``                 RL policy losses: ``cls(**hparams)(logprobs, old_logprobs, advantages, mask, **extra)
                              → (loss, metrics)``, see :mod:`zoo.objectives`
``ADVANTAGE``                 RL advantage estimators (``group_norm``, ``gae``), see :mod:`zoo.objectives`
``ENVIRONMENT``               RL environments with verifiable rewards, see :mod:`tasks.envs`
``OPTIMIZER``                 ``fn(param_groups, **kw) → torch.optim.Optimizer``, see :mod:`zoo.optim`
``SCHEDULER``                 ``fn(optimizer, *, total_steps, **kw) → LRScheduler`` (stepped every step)
``TASK``                      LightningModules whose ``__init__`` takes primitives only, see :mod:`tasks`
``DATA``                      LightningDataModules, see :mod:`tasks.data`
============================  =====================================================================================
"""

from __future__ import annotations

from zoo.registry import Registry

CHANNEL_ATTENTION: Registry = Registry("channel_attention", locations=["zoo.channel_attention"])
BACKBONE: Registry = Registry("backbone", locations=["zoo.backbones"])
DETECTOR: Registry = Registry("detector", locations=["zoo.detectors"])
ATTENTION: Registry = Registry("attention", locations=["zoo.attention"])
FFN: Registry = Registry("ffn", locations=["zoo.ffn"])
MODEL: Registry = Registry("model", locations=["zoo.models", "zoo.vision_language"])
VISION_TOWER: Registry = Registry("vision_tower", locations=["zoo.vision_language"])
PROJECTOR: Registry = Registry("projector", locations=["zoo.vision_language"])
OBJECTIVE: Registry = Registry("objective", locations=["zoo.objectives"])
ADVANTAGE: Registry = Registry("advantage", locations=["zoo.objectives"])
ENVIRONMENT: Registry = Registry("environment", locations=["tasks.envs"])
OPTIMIZER: Registry = Registry("optimizer", locations=["zoo.optim"])
SCHEDULER: Registry = Registry("scheduler", locations=["zoo.optim"])
TASK: Registry = Registry("task", locations=["tasks"])
DATA: Registry = Registry("data", locations=["tasks.data"])

_KINDS = (
    CHANNEL_ATTENTION, BACKBONE, DETECTOR, ATTENTION, FFN, MODEL, VISION_TOWER, PROJECTOR, OBJECTIVE, ADVANTAGE,
    ENVIRONMENT,
)  # fmt: skip
ALL: dict[str, Registry] = {r.kind: r for r in (*_KINDS, OPTIMIZER, SCHEDULER, TASK, DATA)}
