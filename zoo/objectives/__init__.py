"""RL objectives for LLM fine-tuning, registered in ``OBJECTIVE`` (policy losses) and ``ADVANTAGE`` (estimators).

Three orthogonal axes, as in verl (rl.md §5): an advantage estimator, a per-token surrogate, and a loss
aggregation (plus an optional KL term). Contracts::

    objective = OBJECTIVE.build(name, **hparams)                     # keyword-only primitives
    loss, metrics = objective(logprobs, old_logprobs, advantages, mask, **extra)
        # logprobs (with grad), old_logprobs, mask: [B, T]; advantages: [B] or [B, T]
        # extra: ref_logprobs, entropy (all), values, old_values, returns (ppo); [B, T]; unknown keys: TypeError
        # objective.needs_ref (kl_coef > 0), type(objective).needs_values, .aggregation
    estimator = ADVANTAGE.build("group_norm", scale="group")
    advantages = estimator(rewards [B], group_ids [B])                              # [B]
    advantages, returns = ADVANTAGE.build("gae")(token_rewards, values, mask)       # [B, T] each

``OBJECTIVE`` (see :mod:`zoo.objectives.policy`; every objective also takes ``kl_coef``, ``aggregation`` and
``max_length``):

=============  ============================================================  ===========================  ==========
name           per-token surrogate and defaults                              default aggregation          paper
=============  ============================================================  ===========================  ==========
``reinforce``  ``−A·logp`` (no ratio: the on-policy control)                 ``token_mean``               Williams 92
``ppo``        ``max(−A·r, −A·clip(r, 1 ± 0.2))``, ``dual_clip=None``;       ``token_mean``               1707.06347
               with ``values``: ``+ 0.1·0.5·max((V−R)², (V_clip−R)²)``                                    1912.09729
               (``vf_coef=0.1``, ``value_clip=0.2``)
``grpo``       PPO's clip (``clip_eps=0.2``) + ``0.04·k3(logp, ref_logp)``   ``seq_mean_token_mean``      2402.03300
``dr_grpo``    ``grpo`` preset with ``kl_coef=0``                            ``seq_mean_token_sum_norm``  2503.20783
``dapo``       clip-higher ``clip(r, 1 − 0.2, 1 + 0.28)``, no KL             ``token_mean``               2503.14476
``cispo``      ``−sg(clip(r, max=1 + eps_high))·A·logp``, ``eps_high=1.0``   ``token_mean``               2506.13585
               (cap 2; TRL's absolute cap c ↔ ``eps_high = c − 1``),
               ``eps_low=None``; ``unified_mask=False`` (M1 eq. 7, with
               ``mask_eps_low=0.2``, ``mask_eps_high=0.28``)
=============  ============================================================  ===========================  ==========

``ADVANTAGE`` (see :mod:`zoo.objectives.advantages`):

==============  ================================================================================  ==========
name            estimator and defaults                                                            paper
==============  ================================================================================  ==========
``group_norm``  ``(R − mean_group) / (std_group + eps)``, unbiased std, ``eps=1e-6``;             2402.03300
                ``scale="group"`` | ``"batch"`` | ``"none"`` (Dr. GRPO); all-equal and            2503.20783
                single-response groups → 0
``gae``         ``δ_t = r_t + γV_{t+1} − V_t``, ``A_t = δ_t + γλA_{t+1}``, ``R = A + V``,         1506.02438
                masked whitening; ``gamma=1.0, lam=0.95, whiten=True``
==============  ================================================================================  ==========

Helpers: :func:`aggregate` and :func:`masked_mean` (:mod:`zoo.objectives.aggregation`), :func:`surrogate` (the
unified mask form of rl.md §4.3), :func:`outcome_to_token_rewards`, :func:`kl_penalty` (k1, k2, k3),
:func:`masked_whiten`.
"""

from zoo.objectives.advantages import (
    GAE,
    GROUP_SCALES,
    KL_ESTIMATORS,
    GroupNorm,
    kl_penalty,
    masked_whiten,
    outcome_to_token_rewards,
)
from zoo.objectives.aggregation import AGGREGATIONS, aggregate, check_aggregation, masked_mean, masked_sum
from zoo.objectives.policy import (
    CISPO,
    DAPO,
    GRPO,
    PPO,
    ClippedObjective,
    Objective,
    Reinforce,
    Surrogate,
    surrogate,
)

__all__ = [
    "AGGREGATIONS",
    "CISPO",
    "DAPO",
    "GAE",
    "GROUP_SCALES",
    "GRPO",
    "KL_ESTIMATORS",
    "PPO",
    "ClippedObjective",
    "GroupNorm",
    "Objective",
    "Reinforce",
    "Surrogate",
    "aggregate",
    "check_aggregation",
    "kl_penalty",
    "masked_mean",
    "masked_sum",
    "masked_whiten",
    "outcome_to_token_rewards",
    "surrogate",
]
