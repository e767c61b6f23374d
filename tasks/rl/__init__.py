"""Reinforcement learning with verifiable rewards (``task=rl``): rollouts from the hybrid LM's cached generation,
rewards from an ``ENVIRONMENT``, advantages from an ``ADVANTAGE`` estimator, μ updates per rollout with an
``OBJECTIVE`` (reinforce / ppo / grpo / dapo / cispo).

One training step (one batch of prompts from :class:`tasks.data.rl_prompts.RLPromptData`)::

    G completions per prompt (sampled, cached decoding)  →  rewards (+ DAPO overlong shaping)
    → old log-probs (and reference log-probs, values) from a full forward of the sampling policy
    → advantages (group_norm over each prompt's G rewards, or GAE with a value head for PPO)
    → optional DAPO dynamic sampling (drop groups whose rewards are all equal)
    → ``minibatches × epochs`` optimizer steps on the objective (μ > 1 reuses the rollout off-policy)

The policy starts from a ``task=lm`` checkpoint (``init_checkpoint``) or from a short supervised warm start on the
environment's imperfect demonstrations, so that the starting pass rate is neither 0 nor 1.

============================== ====================================================================================
module                         job
============================== ====================================================================================
:mod:`tasks.rl.task`           :class:`RLTask`, the LightningModule: the step above, evaluation, checkpoint state
:mod:`tasks.rl.rollout`        sampling completions (:mod:`zoo.generation`: ragged prompts in one batch), M1's
                               repetition cut, per-token log-probabilities
:mod:`tasks.rl.scoring`        a completion's reward / correctness / format / length, their means, DAPO's overlong
                               shaping
:mod:`tasks.rl.warm_start`     where the policy starts: a checkpoint, or supervised steps on demonstrations with
                               the ``OPTIMIZER`` / ``SCHEDULER`` named by ``rl.warm_start_optim``
============================== ====================================================================================
"""

from tasks.rl.rollout import Completion, repetition_cut, sample_completions, sequence_logprobs, token_logprobs
from tasks.rl.scoring import EVAL_KEYS, Score, mean_scores, overlong_penalty, score_completion
from tasks.rl.task import RLTask
from tasks.rl.warm_start import WARM_START_OPTIM, load_policy_weights, warm_start

__all__ = [
    "EVAL_KEYS",
    "WARM_START_OPTIM",
    "Completion",
    "RLTask",
    "Score",
    "load_policy_weights",
    "mean_scores",
    "overlong_penalty",
    "repetition_cut",
    "sample_completions",
    "score_completion",
    "sequence_logprobs",
    "token_logprobs",
    "warm_start",
]
