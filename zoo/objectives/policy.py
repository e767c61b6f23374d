"""RL policy objectives (``OBJECTIVE`` names ``reinforce``, ``ppo``, ``grpo``, ``dr_grpo``, ``dapo``, ``cispo``).

rl.md §1-4 and minimax.md §4.2. Notation, per token t of response i (all ``[B, T]``)::

    logp      = log π_θ(o_t | q, o_<t)                 current policy, with grad
    old_logp  = log π_old(o_t | ...)                   the policy that sampled (no grad)
    r_t       = exp(clamp(logp − old_logp, −20, 20))   importance ratio (the clamp is verl's and OpenRLHF's)
    A_t       = advantage, one per sequence ([B], broadcast to its tokens) or per token ([B, T])
    sg(·)     = stop-gradient

Contract of every objective::

    objective = OBJECTIVE.build(name, **hparams)         # keyword-only primitives
    loss, metrics = objective(logprobs, old_logprobs, advantages, mask, **extra)

``loss`` is the scalar to minimise; ``metrics`` maps names to detached scalar tensors. Extras (each ``[B, T]``;
passing ``None`` is the same as leaving it out): ``ref_logprobs`` (every objective; needed when ``kl_coef > 0``,
see :attr:`Objective.needs_ref`), ``entropy`` (logged only, never a bonus), and for ``ppo`` ``values`` (with grad),
``old_values`` and ``returns``. Any other key raises TypeError, so a typo cannot silently drop a term.
``old_logprobs``, ``ref_logprobs``, ``advantages``, ``old_values`` and ``returns`` are detached here; ``bfloat16``
and ``float16`` inputs are computed in ``float32``.

Per-token losses are reduced by :func:`~zoo.objectives.aggregation.aggregate`: each objective has a default
aggregation (the one of its paper) and takes ``aggregation=`` to override it, plus ``max_length`` for the constant
of ``seq_mean_token_sum_norm``. The optional KL penalty ``kl_coef · k3(logp, ref_logp)`` is added to every token's
loss before aggregation (TRL's form; GRPO's default ``kl_coef`` is DeepSeekMath's 0.04, every other objective's 0).

Metrics every objective returns: ``clip_frac`` (fraction of unmasked tokens where the objective's clip, cap or
mask is active; 0 for ``reinforce``), ``approx_kl`` (``mean(old_logp − logp)``, the k1 estimate of KL(old‖new)),
``ratio_mean``, ``ratio_max``, ``adv_mean`` (token-weighted mean advantage), ``policy_loss`` (the aggregated
surrogate alone), plus ``entropy`` when given and ``kl_ref`` (mean k3 to the reference) when ``ref_logprobs`` is
given. All means are over unmasked tokens; with an all-zero mask every metric and the loss are 0.

Loss *values* are not comparable across objectives (``ppo``'s is ``−A·r``, ``cispo``'s and ``reinforce``'s
``−A·logp``); their gradients are: at ``r == 1`` (on-policy, one update per rollout) every objective's gradient is
the REINFORCE gradient ``−A·∇logp`` divided by its aggregation's normaliser (plus the KL term's). Clipping matters
only off-policy (several updates per rollout batch, or a sampler that differs from the learner).
"""

from __future__ import annotations

import abc
import inspect
from collections.abc import Mapping
from typing import ClassVar, NamedTuple

import torch

from zoo.errors import ConfigError
from zoo.objectives.advantages import LOG_RATIO_CLAMP, kl_penalty
from zoo.objectives.aggregation import aggregate, check_aggregation, masked_mean
from zoo.registries import OBJECTIVE

__all__ = ["CISPO", "DAPO", "GRPO", "PPO", "ClippedObjective", "Objective", "Reinforce", "Surrogate", "surrogate"]


# ---------------------------------------------------------------------------------------------------- unified form
class Surrogate(NamedTuple):
    """The per-token pieces of :func:`surrogate`, all ``[B, T]``."""

    loss: torch.Tensor
    """``−sg(w)·A·logp·M``, with grad through ``logp``; unmasked and unaggregated."""
    keep: torch.Tensor
    """bool, the trust-region mask ``M`` (False where a token is masked out)."""
    weight: torch.Tensor
    """the clipped importance weight ``w`` (detached)."""
    ratio: torch.Tensor
    """``r`` (detached)."""


def surrogate(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    *,
    is_min: float | None = None,
    is_max: float | None = None,
    tr_low: float | None = None,
    tr_high: float | None = None,
    dual_c: float | None = None,
) -> Surrogate:
    """The whole family in one kernel: MiniMax-M1's unified objective (eqs. 6-7, rl.md §4.3).

    ::

        r    = exp(clamp(logp − old_logp, −20, 20))
        w    = clamp(r, is_min, is_max)                    (the CISPO weight clip; r when both are None)
        M    = 0  if tr_high set and A > 0 and r > 1 + tr_high
               0  if tr_low  set and A < 0 and r < 1 − tr_low
               0  if dual_c  set and A < 0 and r > dual_c
               1  otherwise
        L_t  = −sg(w) · A · logp · M

    Since ``∇[sg(r)·A·logp] = r·A·∇logp = A·∇r``, PPO's clipped surrogate ``max(−A·r, −A·clip(r))`` has exactly the
    gradient of ``tr_low = eps_low, tr_high = eps_high`` with no weight clip (only the loss value differs); with
    ``M ≡ 1`` and ``is_max = 1 + eps_high`` it is CISPO; both at once is CISPO with the trust-region mask. Presets:
    PPO/GRPO ``tr_low=tr_high=0.2`` (``dual_c=3.0`` for verl parity), DAPO ``tr_low=0.2, tr_high=0.28``, CISPO
    ``is_max=1+eps_high``.

    Args:
        logprobs: ``[B, T]`` with grad.
        old_logprobs: ``[B, T]``.
        advantages: ``[B]`` or ``[B, T]``.
        is_min, is_max: absolute bounds of the weight (None: unbounded on that side).
        tr_low, tr_high: trust-region offsets of the mask (None: that side off).
        dual_c: the dual-clip constant ``c > 1`` (None: off).

    Returns:
        :class:`Surrogate` ``(loss, keep, weight, ratio)``; aggregate ``loss`` with the response mask.
    """
    adv = _broadcast_advantages(advantages, logprobs.shape).to(logprobs.dtype)
    ratio = torch.exp((logprobs.detach() - old_logprobs.detach()).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))
    weight = ratio.clamp(min=is_min, max=is_max) if (is_min is not None or is_max is not None) else ratio
    keep = torch.ones_like(ratio, dtype=torch.bool)
    if tr_high is not None:
        keep &= ~((adv > 0) & (ratio > 1 + tr_high))
    if tr_low is not None:
        keep &= ~((adv < 0) & (ratio < 1 - tr_low))
    if dual_c is not None:
        keep &= ~((adv < 0) & (ratio > dual_c))
    loss = -(weight * adv * logprobs) * keep
    return Surrogate(loss, keep, weight, ratio)


def _broadcast_advantages(advantages: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    if advantages.shape == shape:
        return advantages.detach()
    if advantages.dim() == 1 and advantages.shape[0] == shape[0]:
        return advantages.detach()[:, None].expand(shape)
    raise ValueError(
        f"advantages must be [B] (one per sequence) or [B, T] = {tuple(shape)}, got {tuple(advantages.shape)}"
    )


# ---------------------------------------------------------------------------------------------------- base class
class _Inputs(NamedTuple):
    logp: torch.Tensor  # [B, T] with grad, compute dtype
    old_logp: torch.Tensor  # [B, T] detached
    log_ratio: torch.Tensor  # [B, T] clamped, detached
    ratio: torch.Tensor  # [B, T] with grad through logp
    adv: torch.Tensor  # [B, T] detached
    weights: torch.Tensor  # [B, T] mask as float weights
    valid: torch.Tensor  # [B, T] bool, mask != 0


def _check_nonneg(name: str, key: str, value: float | None, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
        raise ConfigError(f"{name} {key} must be a number >= 0{' or None' if optional else ''}, got {value!r}")


class Objective(abc.ABC):
    """Base of the policy objectives: input checks, the ratio, the optional KL term, aggregation and metrics.

    Subclasses implement :meth:`per_token` (the surrogate per token and where its clip is active) and may extend
    :meth:`extra_terms` (PPO's value loss). Class attributes:

    * ``default_aggregation``: the aggregation of the objective's paper, used when ``aggregation`` is None;
    * ``needs_values``: the task should compute a critic's values (and GAE) and pass ``values`` etc.;
    * ``extras``: the extra keyword arguments ``__call__`` accepts.

    Args:
        kl_coef: β of ``β · k3(logp, ref_logp)`` added to each token's loss before aggregation (needs
            ``ref_logprobs``).
        aggregation: one of :data:`~zoo.objectives.aggregation.AGGREGATIONS`; None for ``default_aggregation``.
        max_length: the constant of ``seq_mean_token_sum_norm`` (the generation budget); None for the batch's T.
    """

    name: ClassVar[str] = "objective"
    default_aggregation: ClassVar[str] = "token_mean"
    needs_values: ClassVar[bool] = False
    extras: ClassVar[frozenset[str]] = frozenset({"ref_logprobs", "entropy"})

    def __init__(self, *, kl_coef: float = 0.0, aggregation: str | None = None, max_length: int | None = None):
        _check_nonneg(self.name, "kl_coef", kl_coef)
        if aggregation is not None and not isinstance(aggregation, str):
            raise ConfigError(f"{self.name} aggregation must be a string, got {aggregation!r}")
        if max_length is not None and (not isinstance(max_length, int) or max_length <= 0):
            raise ConfigError(f"{self.name} max_length must be a positive int or None, got {max_length!r}")
        self.kl_coef = float(kl_coef)
        self.aggregation = check_aggregation(aggregation or self.default_aggregation)
        self.max_length = max_length

    @property
    def needs_ref(self) -> bool:
        """Whether ``ref_logprobs`` must be passed (``kl_coef > 0``); the task loads a reference model iff true."""
        return self.kl_coef > 0

    def __repr__(self) -> str:
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return f"{type(self).__name__}({', '.join(f'{n}={getattr(self, n)!r}' for n in names)})"

    # ------------------------------------------------------------------ what each objective defines
    @abc.abstractmethod
    def per_token(self, inp: _Inputs) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """``(loss [B, T] with grad, active [B, T] bool where the clip/cap/mask acts, specific metrics)``."""

    def extra_terms(
        self, inp: _Inputs, extra: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """A scalar to add to the loss (or None) and its metrics."""
        return None, {}

    # ------------------------------------------------------------------ the call
    def __call__(
        self,
        logprobs: torch.Tensor,
        old_logprobs: torch.Tensor,
        advantages: torch.Tensor,
        mask: torch.Tensor,
        **extra: torch.Tensor | None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss to minimise and the metrics (see the module docstring for the shapes and extras).

        Raises:
            TypeError: an extra this objective does not know (a typo, or ``values`` to a critic-free objective).
            ValueError: a needed extra is missing (``ref_logprobs`` with ``kl_coef > 0``, ``returns`` with
                ``values``), or shapes disagree.
        """
        given = self._check_extras(extra)
        if self.needs_ref and "ref_logprobs" not in given:
            raise ValueError(
                f"{self.name} with kl_coef={self.kl_coef} needs ref_logprobs [B, T] (the reference policy's log-probs "
                "of the sampled tokens); pass them, or set kl_coef=0"
            )
        inp = self._prepare(logprobs, old_logprobs, advantages, mask, given)
        per_token, active, specific = self.per_token(inp)
        policy_loss = aggregate(per_token, inp.weights, self.aggregation, max_length=self.max_length)
        loss = policy_loss
        metrics: dict[str, torch.Tensor] = {}
        ref = given.get("ref_logprobs")
        if ref is not None:
            kl = kl_penalty(inp.logp, ref.detach().to(inp.logp.dtype), "k3")
            if self.kl_coef > 0:
                loss = loss + self.kl_coef * aggregate(kl, inp.weights, self.aggregation, max_length=self.max_length)
            metrics["kl_ref"] = masked_mean(kl.detach(), inp.weights)
        added, added_metrics = self.extra_terms(inp, given)
        if added is not None:
            loss = loss + added
        with torch.no_grad():
            w, valid = inp.weights, inp.valid
            ratio = inp.ratio.detach()
            metrics.update(
                clip_frac=masked_mean(active.to(w.dtype), w),
                approx_kl=masked_mean(-inp.log_ratio, w),
                ratio_mean=masked_mean(ratio, w),
                ratio_max=ratio.masked_fill(~valid, -torch.inf).amax().clamp(min=0)
                if ratio.numel()
                else ratio.new_zeros(()),
                adv_mean=masked_mean(inp.adv, w),
                policy_loss=policy_loss.detach(),
            )
            entropy = given.get("entropy")
            if entropy is not None:
                metrics["entropy"] = masked_mean(self._as_bt("entropy", entropy, inp).detach(), w)
            metrics.update({k: v.detach() for k, v in specific.items()})
            metrics.update({k: v.detach() for k, v in added_metrics.items()})
        return loss, metrics

    def _check_extras(self, extra: Mapping[str, torch.Tensor | None]) -> dict[str, torch.Tensor]:
        unknown = sorted(set(extra) - self.extras)
        if unknown:
            raise TypeError(
                f"{self.name} got unexpected extra argument(s) {', '.join(repr(k) for k in unknown)}. "
                f"Accepted extras: {', '.join(sorted(self.extras))}."
            )
        return {k: v for k, v in extra.items() if v is not None}

    def _prepare(
        self,
        logprobs: torch.Tensor,
        old_logprobs: torch.Tensor,
        advantages: torch.Tensor,
        mask: torch.Tensor,
        extra: Mapping[str, torch.Tensor],
    ) -> _Inputs:
        if logprobs.dim() != 2 or not logprobs.is_floating_point():
            raise ValueError(f"{self.name}: logprobs must be a float [B, T] tensor, got {tuple(logprobs.shape)}")
        shape = logprobs.shape
        for key, x in (("old_logprobs", old_logprobs), ("mask", mask)):
            if x.shape != shape:
                raise ValueError(
                    f"{self.name}: {key} must have the shape of logprobs {tuple(shape)}, got {tuple(x.shape)}"
                )
        dtype = torch.promote_types(logprobs.dtype, torch.float32)
        logp = logprobs.to(dtype)
        old_logp = old_logprobs.detach().to(dtype)
        log_ratio = (logp - old_logp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
        adv = _broadcast_advantages(advantages, shape).to(dtype)
        inp = _Inputs(logp, old_logp, log_ratio.detach(), torch.exp(log_ratio), adv, mask.to(dtype), mask != 0)
        for key, x in extra.items():
            self._as_bt(key, x, inp)
        return inp

    def _as_bt(self, key: str, x: torch.Tensor, inp: _Inputs) -> torch.Tensor:
        if x.shape != inp.logp.shape:
            raise ValueError(
                f"{self.name}: {key} must have the shape of logprobs {tuple(inp.logp.shape)}, got {tuple(x.shape)}"
            )
        return x.to(inp.logp.dtype)


# ---------------------------------------------------------------------------------------------------- REINFORCE
@OBJECTIVE.register("reinforce")
class Reinforce(Objective):
    """REINFORCE with a baseline (Williams 1992): ``L_t = −A_t · logp_t``, default aggregation ``token_mean``.

    No importance ratio: the gradient is ``−A·∇logp`` whatever ``old_logprobs`` holds, so this is the on-policy
    control (one optimizer step per rollout, as nanochat's simplified GRPO). Reused off-policy it is biased; the
    ratio is still computed for the metrics. ``clip_frac`` is 0.

    Args:
        kl_coef, aggregation, max_length: see :class:`Objective`.
    """

    name = "reinforce"
    default_aggregation = "token_mean"

    def __init__(self, *, kl_coef: float = 0.0, aggregation: str | None = None, max_length: int | None = None):
        super().__init__(kl_coef=kl_coef, aggregation=aggregation, max_length=max_length)

    def per_token(self, inp: _Inputs) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        return -inp.adv * inp.logp, torch.zeros_like(inp.valid), {}


# ---------------------------------------------------------------------------------------------------- clipped family
class ClippedObjective(Objective):
    """PPO's clipped surrogate in the literal form all three libraries ship (rl.md §1.1)::

        L_t = max( −A_t·r_t , −A_t·clip(r_t, 1 − eps_low, 1 + eps_high) )
        L_t = min( L_t , −A_t·c )   where A_t < 0                       (dual clip, if dual_clip = c)

    ``clip_frac`` is the fraction of tokens where the clipped term wins (zero gradient: ``A > 0, r > 1 + eps_high``
    or ``A < 0, r < 1 − eps_low``); ``clip_frac_lower`` where the dual clip wins (``A < 0, r > c``).

    Args:
        clip_eps: ε of both sides.
        eps_low, eps_high: override ``clip_eps`` on one side (decoupled clip).
        dual_clip: Ye et al.'s ``c > 1`` (verl's ``clip_ratio_c = 3.0``, always on there); None: off.
        kl_coef, aggregation, max_length: see :class:`Objective`.
    """

    def __init__(
        self,
        *,
        clip_eps: float = 0.2,
        eps_low: float | None = None,
        eps_high: float | None = None,
        dual_clip: float | None = None,
        kl_coef: float = 0.0,
        aggregation: str | None = None,
        max_length: int | None = None,
    ):
        super().__init__(kl_coef=kl_coef, aggregation=aggregation, max_length=max_length)
        _check_nonneg(self.name, "clip_eps", clip_eps)
        _check_nonneg(self.name, "eps_low", eps_low, optional=True)
        _check_nonneg(self.name, "eps_high", eps_high, optional=True)
        if dual_clip is not None and (not isinstance(dual_clip, (int, float)) or not dual_clip > 1):
            raise ConfigError(f"{self.name} dual_clip must be a number > 1 or None, got {dual_clip!r}")
        self.clip_eps = float(clip_eps)
        self.eps_low = float(clip_eps if eps_low is None else eps_low)
        self.eps_high = float(clip_eps if eps_high is None else eps_high)
        self.dual_clip = None if dual_clip is None else float(dual_clip)

    def per_token(self, inp: _Inputs) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        adv, ratio = inp.adv, inp.ratio
        unclipped = -adv * ratio
        clipped = -adv * ratio.clamp(1 - self.eps_low, 1 + self.eps_high)
        loss = torch.maximum(unclipped, clipped)
        active = clipped > unclipped
        lower = torch.zeros_like(active)
        if self.dual_clip is not None:
            capped = -adv * self.dual_clip
            lower = (adv < 0) & (loss > capped)
            loss = torch.where(adv < 0, torch.minimum(loss, capped), loss)
        return loss, active, {"clip_frac_lower": masked_mean(lower.to(inp.weights.dtype), inp.weights)}


@OBJECTIVE.register("ppo")
class PPO(ClippedObjective):
    """PPO (Schulman et al. 2017): the clipped surrogate of :class:`ClippedObjective`, plus the clipped value loss
    when ``values`` are given (rl.md §1.2)::

        V_clip = V_old + clip(V − V_old, −value_clip, +value_clip)
        L_vf,t = 0.5 · max( (V − R)², (V_clip − R)² )          (0.5 · (V − R)² when value_clip is None)
        loss   = agg(L_pg) + vf_coef · agg(L_vf)

    TRL's shared-trunk form (``vf_coef=0.1``, ``cliprange_value=0.2``); no entropy bonus. Default aggregation
    ``token_mean``. ``needs_values`` is true: the task computes values and GAE (``ADVANTAGE`` ``gae``) and passes
    ``values`` (with grad), ``returns`` and ``old_values`` (the values at sampling time; needed when
    ``value_clip`` is set). Without ``values`` only the policy loss is computed (a critic trained elsewhere).
    Extra metrics: ``clip_frac_lower``; with values, ``value_loss`` (unweighted) and ``value_clip_frac``.

    Args:
        clip_eps, eps_low, eps_high, dual_clip: see :class:`ClippedObjective` (eps 0.2 in all three libraries).
        value_clip: ``c_v`` (TRL 0.2; verl and OpenRLHF 0.5); None: no value clipping.
        vf_coef: weight of the value loss (TRL 0.1).
        kl_coef, aggregation, max_length: see :class:`Objective`.
    """

    name = "ppo"
    default_aggregation = "token_mean"
    needs_values = True
    extras = Objective.extras | {"values", "old_values", "returns"}

    def __init__(
        self,
        *,
        clip_eps: float = 0.2,
        eps_low: float | None = None,
        eps_high: float | None = None,
        dual_clip: float | None = None,
        value_clip: float | None = 0.2,
        vf_coef: float = 0.1,
        kl_coef: float = 0.0,
        aggregation: str | None = None,
        max_length: int | None = None,
    ):
        super().__init__(
            clip_eps=clip_eps,
            eps_low=eps_low,
            eps_high=eps_high,
            dual_clip=dual_clip,
            kl_coef=kl_coef,
            aggregation=aggregation,
            max_length=max_length,
        )
        _check_nonneg(self.name, "value_clip", value_clip, optional=True)
        _check_nonneg(self.name, "vf_coef", vf_coef)
        self.value_clip = None if value_clip is None else float(value_clip)
        self.vf_coef = float(vf_coef)

    def extra_terms(
        self, inp: _Inputs, extra: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        values = extra.get("values")
        if values is None:
            stray = sorted(k for k in ("old_values", "returns") if k in extra)
            if stray:
                raise ValueError(
                    f"ppo got {' and '.join(stray)} but no values: pass values [B, T] (with grad) to train the value "
                    "head, or leave them out"
                )
            return None, {}
        if "returns" not in extra:
            raise ValueError("ppo got values but no returns [B, T] (the value targets, e.g. from ADVANTAGE 'gae')")
        if self.value_clip is not None and "old_values" not in extra:
            raise ValueError(
                f"ppo with value_clip={self.value_clip} needs old_values [B, T] (the values at sampling time); pass "
                "them, or set value_clip=None"
            )
        v = self._as_bt("values", values, inp)
        target = self._as_bt("returns", extra["returns"], inp).detach()
        loss = (v - target).square()
        clipped_frac = torch.zeros((), dtype=v.dtype, device=v.device)
        if self.value_clip is not None:
            old = self._as_bt("old_values", extra["old_values"], inp).detach()
            v_clip = old + (v - old).clamp(-self.value_clip, self.value_clip)
            loss_clip = (v_clip - target).square()
            clipped_frac = masked_mean((loss_clip > loss).to(v.dtype), inp.weights)
            loss = torch.maximum(loss, loss_clip)
        value_loss = aggregate(0.5 * loss, inp.weights, self.aggregation, max_length=self.max_length)
        return self.vf_coef * value_loss, {"value_loss": value_loss, "value_clip_frac": clipped_frac}


@OBJECTIVE.register("grpo")
@OBJECTIVE.register("dr_grpo", aggregation="seq_mean_token_sum_norm", kl_coef=0.0)
class GRPO(ClippedObjective):
    """GRPO (DeepSeekMath, Shao et al. 2024, eq. 3 as TRL implements it)::

        L_t = max( −A·r_t , −A·clip(r_t, 1 − eps_low, 1 + eps_high) ) + β·k3_t
        k3_t = exp(ref_logp − logp) − (ref_logp − logp) − 1          (≥ 0, estimates KL(π_θ ‖ π_ref))

    aggregated ``seq_mean_token_mean`` (each response's token mean, averaged over responses). ``kl_coef`` β = 0.04
    (DeepSeekMath; TRL's default is now 0, DeepSeek-R1 used 0.001); with β > 0 ``needs_ref`` is true and
    ``ref_logprobs`` must be passed. Advantages come from ``ADVANTAGE`` ``group_norm``. Extra metrics:
    ``clip_frac_lower``, ``kl_ref`` (when ``ref_logprobs`` is given).

    The ``OBJECTIVE`` name ``dr_grpo`` is this class with ``aggregation="seq_mean_token_sum_norm"`` and
    ``kl_coef=0`` (Dr. GRPO, Liu et al. 2025); pair it with ``group_norm`` ``scale="none"`` and set ``max_length``
    to the generation budget.

    Args:
        clip_eps, eps_low, eps_high, dual_clip: see :class:`ClippedObjective`.
        kl_coef, aggregation, max_length: see :class:`Objective`.
    """

    name = "grpo"
    default_aggregation = "seq_mean_token_mean"

    def __init__(
        self,
        *,
        clip_eps: float = 0.2,
        eps_low: float | None = None,
        eps_high: float | None = None,
        dual_clip: float | None = None,
        kl_coef: float = 0.04,
        aggregation: str | None = None,
        max_length: int | None = None,
    ):
        super().__init__(
            clip_eps=clip_eps,
            eps_low=eps_low,
            eps_high=eps_high,
            dual_clip=dual_clip,
            kl_coef=kl_coef,
            aggregation=aggregation,
            max_length=max_length,
        )


@OBJECTIVE.register("dapo")
class DAPO(ClippedObjective):
    """DAPO's loss (Yu et al. 2025): GRPO's clipped surrogate with clip-higher ``eps_low=0.2, eps_high=0.28``,
    the token-level ``token_mean`` aggregation, and no KL term.

    DAPO's two other changes are not in the loss and live in the task: dynamic sampling (drop groups whose rewards
    are all equal; ``GroupNorm.zero_std_fraction`` measures them) and overlong reward shaping / filtering (mask
    truncated responses out). Extra metric: ``clip_frac_lower``.

    Args:
        eps_low, eps_high: the decoupled clip range ``[1 − eps_low, 1 + eps_high]``.
        dual_clip: see :class:`ClippedObjective`.
        kl_coef, aggregation, max_length: see :class:`Objective`.
    """

    name = "dapo"
    default_aggregation = "token_mean"

    def __init__(
        self,
        *,
        eps_low: float = 0.2,
        eps_high: float = 0.28,
        dual_clip: float | None = None,
        kl_coef: float = 0.0,
        aggregation: str | None = None,
        max_length: int | None = None,
    ):
        super().__init__(
            clip_eps=eps_low,
            eps_low=eps_low,
            eps_high=eps_high,
            dual_clip=dual_clip,
            kl_coef=kl_coef,
            aggregation=aggregation,
            max_length=max_length,
        )


# ---------------------------------------------------------------------------------------------------- CISPO
@OBJECTIVE.register("cispo")
class CISPO(Objective):
    """CISPO (MiniMax-M1, eq. 4-5): clip the importance-sampling weight, never drop a token's gradient::

        w_t  = clip(r_t, 1 − eps_low, 1 + eps_high)           (no lower bound when eps_low is None, as in M1)
        L    = −Σ_t sg(w_t) · A_t · logp_t · M_t / Σ_t m_t     (token_mean over all responses of the batch)
        M_t  = 0 if A_t > 0 and r_t > 1 + mask_eps_high, or A_t < 0 and r_t < 1 − mask_eps_low; else 1
               (only with ``unified_mask``, M1 eq. 7; M ≡ 1 otherwise)

    Gradient ``−w·A·∇logp`` for every token: where PPO/GRPO/DAPO give a token with ``A > 0, r > 1 + eps`` zero
    gradient, CISPO gives it ``−(1 + eps_high)·A·∇logp``. With ``unified_mask`` and no cap (``eps_high=None``) the
    gradient is exactly PPO's with ``eps = (mask_eps_low, mask_eps_high)``.

    **What eps means.** Here, as in the M1 paper's notation and verl (``clip_ratio_high``), the cap is
    ``1 + eps_high``. TRL's ``epsilon_high`` (and ScaleRL's ε_max) is the *absolute* cap: TRL ``epsilon_high = c``
    ↔ ``eps_high = c − 1`` (TRL's recommended 5.0 ↔ ``eps_high = 4.0``). M1 publishes no value; the default
    ``eps_high = 1.0`` caps the weight at 2 (between verl's example, 0.2, and ScaleRL's 4). Sweep it with the
    number of updates per rollout: the cap only binds off-policy.

    Metrics: ``cap_frac`` (weight capped, ``r > 1 + eps_high``, whatever the sign of A; TRL's
    ``cispo_clip_ratio`` counts only ``A > 0``), ``clip_frac`` (weight clipped at either bound or token masked),
    ``mask_frac`` (``M = 0``; with ``unified_mask`` only).

    Args:
        eps_high: the weight cap is ``1 + eps_high``; None: no cap (off-policy REINFORCE with full IS weights).
        eps_low: the weight floor is ``1 − eps_low``; None (M1): no floor.
        unified_mask: multiply by M1's trust-region mask ``M`` (eq. 7).
        mask_eps_low, mask_eps_high: the mask's trust region (PPO/DAPO's eps; used only with ``unified_mask``).
        kl_coef: see :class:`Objective` (M1 has no KL term; verl's CISPO example uses 0.001).
        aggregation, max_length: see :class:`Objective`; default ``token_mean`` (M1's ``1/Σ|o_i|``).
    """

    name = "cispo"
    default_aggregation = "token_mean"

    def __init__(
        self,
        *,
        eps_high: float | None = 1.0,
        eps_low: float | None = None,
        unified_mask: bool = False,
        mask_eps_low: float = 0.2,
        mask_eps_high: float = 0.28,
        kl_coef: float = 0.0,
        aggregation: str | None = None,
        max_length: int | None = None,
    ):
        super().__init__(kl_coef=kl_coef, aggregation=aggregation, max_length=max_length)
        _check_nonneg(self.name, "eps_high", eps_high, optional=True)
        _check_nonneg(self.name, "eps_low", eps_low, optional=True)
        _check_nonneg(self.name, "mask_eps_low", mask_eps_low)
        _check_nonneg(self.name, "mask_eps_high", mask_eps_high)
        if not isinstance(unified_mask, bool):
            raise ConfigError(f"cispo unified_mask must be a bool, got {unified_mask!r}")
        self.eps_high = None if eps_high is None else float(eps_high)
        self.eps_low = None if eps_low is None else float(eps_low)
        self.unified_mask = unified_mask
        self.mask_eps_low = float(mask_eps_low)
        self.mask_eps_high = float(mask_eps_high)

    def per_token(self, inp: _Inputs) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        is_max = None if self.eps_high is None else 1 + self.eps_high
        is_min = None if self.eps_low is None else 1 - self.eps_low
        out = surrogate(
            inp.logp,
            inp.old_logp,
            inp.adv,
            is_min=is_min,
            is_max=is_max,
            tr_low=self.mask_eps_low if self.unified_mask else None,
            tr_high=self.mask_eps_high if self.unified_mask else None,
        )
        w = inp.weights
        capped = out.ratio > is_max if is_max is not None else torch.zeros_like(inp.valid)
        floored = out.ratio < is_min if is_min is not None else torch.zeros_like(inp.valid)
        active = capped | floored | ~out.keep
        metrics = {"cap_frac": masked_mean(capped.to(w.dtype), w)}
        if self.unified_mask:
            metrics["mask_frac"] = masked_mean((~out.keep).to(w.dtype), w)
        return out.loss, active, metrics
