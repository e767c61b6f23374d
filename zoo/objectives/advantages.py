"""Advantage estimators (``ADVANTAGE`` names ``group_norm``, ``gae``) and reward helpers.

An estimator turns rewards into the advantages an objective weighs ``∇log π`` by (rl.md §1.3, §2.1):

* ``group_norm`` (GRPO, DeepSeekMath eq. 3 / MiniMax-M1 eq. 2): the reward of each of the G responses to a prompt
  minus the group mean, optionally divided by a standard deviation; one advantage per sequence ``[B]``.
* ``gae`` (PPO, Schulman et al. 2015): generalised advantage estimation from token rewards and a critic's values,
  one advantage per token ``[B, T]``, and the critic's regression targets.

Everything here runs without gradient: advantages and returns are constants of the policy loss.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from zoo.errors import ConfigError
from zoo.objectives.aggregation import masked_mean
from zoo.registries import ADVANTAGE

__all__ = [
    "GAE",
    "GROUP_SCALES",
    "KL_ESTIMATORS",
    "GroupNorm",
    "kl_penalty",
    "masked_whiten",
    "outcome_to_token_rewards",
]

GROUP_SCALES = ("group", "batch", "none")
KL_ESTIMATORS = ("k1", "k2", "k3")
LOG_RATIO_CLAMP = 20.0
"""Log-ratios are clamped to ``[−20, 20]`` before ``exp`` (verl, OpenRLHF)."""


@ADVANTAGE.register("group_norm")
class GroupNorm:
    """Group-relative advantage of GRPO: ``A_i = (R_i − mean_{j∈g(i)} R_j) / (std_{j∈g(i)} R_j + eps)``.

    ``scale`` picks the denominator (TRL's ``scale_rewards``):

    * ``"group"`` (GRPO, TRL's and verl's default): the unbiased (Bessel) std of the rewards of the group;
    * ``"batch"`` (TRL's "PPO Lite", the ScaleRL recipe): the unbiased std of all rewards of the batch;
    * ``"none"`` (Dr. GRPO, OpenRLHF's ``dr_grpo`` / ``reinforce_baseline``): no division, ``A_i = R_i − mean``.

    A group whose rewards are all equal (all right, all wrong, or a single response) gets exactly 0 for every member
    (never NaN): it carries no learning signal, which is what DAPO's dynamic sampling filters out (the task's job;
    :meth:`zero_std_fraction` measures it). Unlike verl, which gives a group of one the advantage ``R_i``, a lone
    response has no baseline here and gets 0.

    Args:
        scale: ``"group"``, ``"batch"`` or ``"none"``.
        eps: added to the std (verl 1e-6, TRL 1e-4, OpenRLHF 1e-9).

    Call:
        ``rewards [B]`` (one scalar per response), ``group_ids [B]`` int (responses to the same prompt share an
        id; ids need not be contiguous or sorted) → ``advantages [B]`` in the rewards' floating dtype.
    """

    needs_values: ClassVar[bool] = False

    def __init__(self, *, scale: str = "group", eps: float = 1e-6):
        if scale not in GROUP_SCALES:
            raise ConfigError(f"Unknown group_norm scale '{scale}'. Valid choices: {', '.join(GROUP_SCALES)}.")
        if not eps >= 0:
            raise ConfigError(f"group_norm eps must be >= 0, got {eps}")
        self.scale = scale
        self.eps = float(eps)

    def __repr__(self) -> str:
        return f"GroupNorm(scale={self.scale!r}, eps={self.eps})"

    @staticmethod
    def _groups(rewards: torch.Tensor, group_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``rewards`` as float, each sample's group index ``[B]`` and the group sizes ``[G]``."""
        if rewards.dim() != 1:
            raise ValueError(f"rewards must be [B] (one scalar per response), got shape {tuple(rewards.shape)}")
        if group_ids.shape != rewards.shape:
            raise ValueError(
                f"group_ids must have the shape of rewards {tuple(rewards.shape)}, got {tuple(group_ids.shape)}"
            )
        if group_ids.is_floating_point():
            raise ValueError(f"group_ids must be integers, got {group_ids.dtype}")
        r = rewards.detach()
        if not r.is_floating_point():
            r = r.to(torch.get_default_dtype())
        _, index = torch.unique(group_ids, return_inverse=True)
        sizes = torch.bincount(index)
        return r, index, sizes

    @staticmethod
    def _equal(r: torch.Tensor, index: torch.Tensor, groups: int) -> torch.Tensor:
        """Per group, whether all its rewards are equal ``[G]`` (bool)."""
        hi = torch.full((groups,), -torch.inf, dtype=r.dtype, device=r.device).scatter_reduce(0, index, r, "amax")
        lo = torch.full((groups,), torch.inf, dtype=r.dtype, device=r.device).scatter_reduce(0, index, r, "amin")
        return hi == lo

    @torch.no_grad()
    def __call__(self, rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
        r, index, sizes = self._groups(rewards, group_ids)
        groups = sizes.numel()
        n = sizes.to(r.dtype)
        mean = torch.zeros(groups, dtype=r.dtype, device=r.device).index_add_(0, index, r) / n
        centered = r - mean[index]
        # all-equal groups (single responses included) → exactly 0; r − mean alone can be ±1 ulp off
        centered = torch.where(self._equal(r, index, groups)[index], torch.zeros_like(centered), centered)
        if self.scale == "none":
            return centered
        if self.scale == "group":
            ss = torch.zeros(groups, dtype=r.dtype, device=r.device).index_add_(0, index, centered.square())
            std = (ss / (n - 1).clamp(min=1)).sqrt()[index]
        else:
            std = r.std() if r.numel() > 1 else torch.zeros((), dtype=r.dtype, device=r.device)
        denominator = std + self.eps
        return centered / torch.where(denominator > 0, denominator, torch.ones_like(denominator))  # eps=0: 0, not NaN

    def zero_std_fraction(self, rewards: torch.Tensor, group_ids: torch.Tensor) -> float:
        """The fraction of groups whose rewards are all equal (single-response groups included), i.e. that give
        zero advantage; the groups DAPO's dynamic sampling would drop. TRL logs the per-sample version
        ``frac_reward_zero_std`` (the same number when all groups have G members). Syncs with the device."""
        r, index, sizes = self._groups(rewards, group_ids)
        return float(self._equal(r, index, sizes.numel()).float().mean()) if sizes.numel() else 0.0


@ADVANTAGE.register("gae")
class GAE:
    """Generalised advantage estimation (Schulman et al. 2015, eq. 16) as verl's ``compute_gae_advantage_return``::

        δ_t = r_t + γ·V_{t+1} − V_t          (V after the last unmasked token = 0)
        A_t = δ_t + γλ·A_{t+1}
        R_t = A_t + V_t                       (the critic's target, taken before whitening)
        A   ← (A − mean_m A) / sqrt(var_m A + 1e-8)      (masked, unbiased variance, if ``whiten``)

    Masked positions (padding, or observation / tool tokens inside a response) are skipped: "t + 1" is the next
    unmasked position, so the value and accumulated advantage carry over them, and they add no reward of their own.
    On masked positions the outputs are 0.

    Args:
        gamma: discount γ (1.0 in TRL, verl and OpenRLHF).
        lam: GAE λ (TRL 0.95; verl and OpenRLHF 1.0).
        whiten: whiten the advantages over the unmasked tokens of the batch (TRL's and verl's default).

    Call:
        ``rewards [B, T]`` token rewards (e.g. :func:`outcome_to_token_rewards`, plus a per-token KL penalty),
        ``values [B, T]`` the critic's values of the sampled states (detached here), ``mask [B, T]`` →
        ``(advantages [B, T], returns [B, T])``.
    """

    needs_values: ClassVar[bool] = True

    def __init__(self, *, gamma: float = 1.0, lam: float = 0.95, whiten: bool = True):
        for key, value in (("gamma", gamma), ("lam", lam)):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"gae {key} must be in [0, 1], got {value}")
        self.gamma = float(gamma)
        self.lam = float(lam)
        self.whiten = bool(whiten)

    def __repr__(self) -> str:
        return f"GAE(gamma={self.gamma}, lam={self.lam}, whiten={self.whiten})"

    @torch.no_grad()
    def __call__(
        self, rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if rewards.dim() != 2:
            raise ValueError(f"gae rewards must be [B, T] token rewards, got shape {tuple(rewards.shape)}")
        for key, x in (("values", values), ("mask", mask)):
            if x.shape != rewards.shape:
                raise ValueError(
                    f"gae {key} must have the shape of rewards {tuple(rewards.shape)}, got {tuple(x.shape)}"
                )
        v = values.detach()
        dtype = torch.promote_types(rewards.dtype, v.dtype)
        if not dtype.is_floating_point:
            dtype = torch.get_default_dtype()
        r, v, m = rewards.to(dtype), v.to(dtype), (mask != 0).to(dtype)
        next_value = torch.zeros_like(r[:, 0])
        last = torch.zeros_like(r[:, 0])
        out = []
        for t in reversed(range(r.shape[1])):
            delta = r[:, t] + self.gamma * next_value - v[:, t]
            here = delta + self.gamma * self.lam * last
            next_value = torch.where(m[:, t] != 0, v[:, t], next_value)
            last = torch.where(m[:, t] != 0, here, last)
            out.append(last)
        advantages = torch.stack(out[::-1], dim=1) * m
        returns = (advantages + v) * m
        if self.whiten:
            advantages = masked_whiten(advantages, m)
        return advantages, returns


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``(x − mean) / sqrt(var + eps)`` with the mean and the unbiased variance over the unmasked positions (TRL's
    and verl's ``masked_whiten``; the variance is taken as 0 with fewer than two positions); 0 on masked ones."""
    m = (mask != 0).to(x.dtype)
    mean = masked_mean(x, m)
    count = m.sum()
    bessel = torch.where(count > 1, count / (count - 1).clamp(min=1), torch.zeros_like(count))  # no host sync
    var = masked_mean((x - mean).square(), m) * bessel
    return (x - mean) * torch.rsqrt(var + eps) * m


def outcome_to_token_rewards(rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Place each sequence's scalar reward on its last unmasked token (TRL puts the score at EOS).

    Args:
        rewards: ``[B]`` one reward per sequence.
        mask: ``[B, T]`` bool or float.

    Returns:
        ``[B, T]`` zeros except ``rewards[i]`` at the last position where ``mask[i] != 0``; all zero for a
        sequence without unmasked tokens.
    """
    if rewards.dim() != 1 or mask.dim() != 2 or mask.shape[0] != rewards.shape[0]:
        raise ValueError(f"expected rewards [B] and mask [B, T], got {tuple(rewards.shape)} and {tuple(mask.shape)}")
    keep = mask != 0
    pos = torch.arange(mask.shape[1], device=mask.device).expand_as(mask).masked_fill(~keep, -1).amax(1)
    dtype = rewards.dtype if rewards.is_floating_point() else torch.get_default_dtype()
    out = torch.zeros(mask.shape, dtype=dtype, device=rewards.device)
    has = pos >= 0
    out[has.nonzero().squeeze(1), pos[has]] = rewards[has].to(dtype)
    return out


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    """Per-token estimate of ``KL(π_θ ‖ π_ref)`` from tokens sampled by π_θ (J. Schulman, "Approximating KL
    divergence"); with ``d = logp − ref_logp`` (clamped to ``[−20, 20]``):

    * ``"k1"``: ``d`` (unbiased, can be negative; TRL PPO's reward penalty, verl ``kl``);
    * ``"k2"``: ``d² / 2`` (verl ``mse``);
    * ``"k3"``: ``exp(−d) + d − 1 = exp(ref − logp) − (ref − logp) − 1`` (≥ 0, unbiased, low variance; GRPO's KL,
      verl ``low_var_kl`` without its ``[−10, 10]`` clamp of the result).

    Shapes: any, the two equal (``[B, T]`` usually). Differentiable w.r.t. both.
    """
    if kind not in KL_ESTIMATORS:
        raise ConfigError(f"Unknown KL estimator kind '{kind}'. Valid choices: {', '.join(KL_ESTIMATORS)}.")
    if logprobs.shape != ref_logprobs.shape:
        raise ValueError(
            f"ref_logprobs must have the shape of logprobs {tuple(logprobs.shape)}, got {tuple(ref_logprobs.shape)}"
        )
    d = (logprobs - ref_logprobs).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    if kind == "k1":
        return d
    if kind == "k2":
        return 0.5 * d.square()
    return torch.exp(-d) + d - 1
