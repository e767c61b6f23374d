"""Loss aggregation: how a ``[B, T]`` matrix of per-token losses becomes one scalar ("which tokens count how much").

rl.md §2.3. The aggregation is orthogonal to the surrogate (verl's ``agg_loss``); it is the real difference between
TRL's ``grpo`` / ``bnpo`` / ``dapo`` / ``dr_grpo`` loss types. With ``m`` the loss mask and ``L`` the per-token loss:

=============================  ==========================  ===========================  =========================
mode                           formula                     verl ``loss_agg_mode``       TRL ``loss_type``
=============================  ==========================  ===========================  =========================
``token_mean``                 ``Σ_it m L / Σ_it m``       ``token-mean`` (default)     ``bnpo``, ``dapo``, ``cispo``
``seq_mean_token_mean``        ``mean_i Σ_t m L / Σ_t m``  ``seq-mean-token-mean``      ``grpo``
``seq_mean_token_sum``         ``mean_i Σ_t m L``          ``seq-mean-token-sum``       -
``seq_mean_token_sum_norm``    ``Σ_it m L / (B · T_max)``  ``seq-mean-token-sum-norm``  ``dr_grpo``
=============================  ==========================  ===========================  =========================

The two ``seq_mean_*`` modes average over the sequences with at least one unmasked token (as verl does), so a
response masked out entirely (DAPO's overlong filtering) does not change the weight of the others.
``seq_mean_token_mean`` gives every response the same total weight whatever its length, so a token of a short
response weighs more than a token of a long one (the length bias Dr. GRPO and DAPO remove); ``token_mean`` weighs
every token alike.

Every function here is safe for an all-zero mask: the result is 0, still attached to the graph (its gradient is
0), never NaN. Masked positions may hold any value, even ``inf`` or NaN: they are selected out, not multiplied by 0.
"""

from __future__ import annotations

import torch

from zoo.errors import ConfigError

__all__ = ["AGGREGATIONS", "aggregate", "check_aggregation", "masked_mean", "masked_sum"]

AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "seq_mean_token_sum_norm")


def check_aggregation(mode: str) -> str:
    """``mode`` if it is one of :data:`AGGREGATIONS`, else :class:`~zoo.errors.ConfigError` (a ValueError) naming
    ``aggregation`` and the valid choices."""
    if mode not in AGGREGATIONS:
        raise ConfigError(f"Unknown aggregation '{mode}'. Valid choices: {', '.join(AGGREGATIONS)}.")
    return mode


def _weights(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if mask.shape != like.shape:
        raise ValueError(f"mask must have the shape of the loss {tuple(like.shape)}, got {tuple(mask.shape)}")
    dtype = like.dtype if like.is_floating_point() else torch.get_default_dtype()
    return mask.to(dtype)


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """``Σ m·x`` over ``dim`` (all dimensions when None); positions where ``m == 0`` are excluded, whatever ``x``
    holds there. ``mask`` (bool or float weights) has the shape of ``x``."""
    w = _weights(mask, x)
    masked = torch.where(w != 0, x * w, torch.zeros((), dtype=w.dtype, device=x.device))
    return masked.sum() if dim is None else masked.sum(dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """``Σ m·x / Σ m`` over ``dim`` (all dimensions when None); 0 (with a zero gradient) where ``Σ m == 0``.

    Args:
        x: any shape, e.g. ``[B, T]``.
        mask: the shape of ``x``, bool or float (1 on the positions that count).
        dim: the dimension to reduce, or None for all of them.
    """
    total = masked_sum(x, mask, dim)
    count = _weights(mask, x).sum() if dim is None else _weights(mask, x).sum(dim)
    return total / torch.where(count != 0, count, torch.ones_like(count))


def aggregate(loss: torch.Tensor, mask: torch.Tensor, mode: str, *, max_length: int | None = None) -> torch.Tensor:
    """Reduce per-token losses to the scalar to minimise (see the module docstring for the formulas).

    Args:
        loss: ``[B, T]`` per-token loss.
        mask: ``[B, T]`` bool or float, 1 on the tokens that count.
        mode: one of :data:`AGGREGATIONS`.
        max_length: the constant ``T_max`` of ``seq_mean_token_sum_norm`` (Dr. GRPO uses the generation budget,
            ``max_new_tokens``); default the padded length ``T`` of this batch. Ignored by the other modes.

    Returns:
        a scalar tensor; 0 with a zero gradient when the mask is all zero.

    Raises:
        ConfigError (a ValueError): an unknown ``mode``, naming ``aggregation`` and the valid choices.
    """
    check_aggregation(mode)
    if loss.dim() != 2:
        raise ValueError(f"aggregate expects a [B, T] loss, got shape {tuple(loss.shape)}")
    if mode == "token_mean":
        return masked_mean(loss, mask)
    if mode == "seq_mean_token_sum_norm":
        batch, length = loss.shape
        if max_length is not None and max_length <= 0:
            raise ValueError(f"max_length must be positive, got {max_length}")
        return masked_sum(loss, mask) / (batch * (length if max_length is None else max_length))
    per_seq = masked_mean(loss, mask, dim=1) if mode == "seq_mean_token_mean" else masked_sum(loss, mask, dim=1)
    has_tokens = _weights(mask, loss).sum(1) != 0
    return masked_mean(per_seq, has_tokens)
