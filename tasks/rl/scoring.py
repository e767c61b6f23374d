"""Scoring completions against an environment: reward, correctness, format, length; DAPO's overlong shaping."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from tasks.data.tokenizer import Tokenizer

#: What evaluation reports per held-out set (``val/acc``, ``val/reward``, …), each a mean over problems.
EVAL_KEYS = ("acc", "reward", "format", "length")


class Score(NamedTuple):
    """One completion's score: the environment's reward, exact-match correctness, whether it ended with EOS in
    the environment's format, and its length in tokens (EOS included)."""

    reward: float
    correct: bool
    format_ok: bool
    length: int


def score_completion(env: Any, tokenizer: Tokenizer, problem: Any, completion: Sequence[int]) -> Score:
    """Score token ids ``completion`` (ending with EOS if the policy finished) for ``problem`` of ``env`` (an
    ``ENVIRONMENT``: ``reward``, ``is_correct``, ``format_ok``)."""
    eos = tokenizer.eos_id
    finished = bool(completion) and completion[-1] == eos
    text = tokenizer.decode(list(completion[:-1] if finished else completion))
    return Score(
        reward=env.reward(problem, text, finished),
        correct=env.is_correct(problem, text, finished),
        format_ok=finished and env.format_ok(text),
        length=len(completion),
    )


def mean_scores(scores: Sequence[Score]) -> dict[str, float]:
    """The means of :data:`EVAL_KEYS` over ``scores`` (0 for none), and their ``count``."""
    n = max(1, len(scores))
    return {
        "acc": sum(s.correct for s in scores) / n,
        "reward": sum(s.reward for s in scores) / n,
        "format": sum(s.format_ok for s in scores) / n,
        "length": sum(s.length for s in scores) / n,
        "count": len(scores),
    }


def overlong_penalty(length: int, max_len: int, buffer: int) -> float:
    """DAPO's soft overlong punishment (eq. 13): 0 up to ``max_len − buffer`` tokens, then linear down to −1 at
    ``max_len``, −1 beyond."""
    if length <= max_len - buffer:
        return 0.0
    if length <= max_len:
        return ((max_len - buffer) - length) / buffer
    return -1.0
