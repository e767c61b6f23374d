"""The environment contract: problems as plain strings, a verifiable reward, a held-out evaluation set.

An :class:`Environment` generates :class:`Problem` s (a prompt and one correct answer), scores a completion of a
prompt, and writes demonstrations for a supervised warm start that are wrong at a chosen rate. Prompts and answers
are ASCII, so with the byte-level tokenizer one character is one token.

Training problems never coincide with the evaluation set: :meth:`Environment.sample` rejects any problem whose
:meth:`Environment.key` is one of the evaluation set's.
"""

from __future__ import annotations

import abc
import random
from dataclasses import dataclass
from typing import Any

from zoo.errors import ConfigError

FORMAT_SCORE = 0.1  # TinyZero's ``format_score``: a well-formed but wrong answer
MAX_REJECTIONS = 1000  # draws per training problem before sampling gives up (the eval set covers the distribution)
EVAL_DRAWS = 100  # draws per evaluation problem before the environment is deemed too small for eval_size


@dataclass(frozen=True)
class Problem:
    """One problem: the prompt the policy continues, one correct answer, and what generated it (hashable).

    Attributes:
        prompt: the text the policy sees, e.g. ``"57+384="``.
        answer: one correct completion (without EOS), e.g. ``"144"`` (reversed 441).
        meta: the generating values, e.g. the operands ``(57, 384)``; the environment documents its layout.
    """

    prompt: str
    answer: str
    meta: tuple = ()


def check_int(value: Any, key: str, minimum: int, maximum: int | None = None) -> int:
    """``value`` if it is an integer in ``[minimum, maximum]``, else a :class:`ConfigError` naming ``key``."""
    too_large = maximum is not None and isinstance(value, int) and value > maximum
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or too_large:
        bounds = f"≥ {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ConfigError(f"{key}={value!r} must be an integer {bounds}")
    return value


def check_score(value: Any, key: str) -> float:
    """``value`` if it is a number in ``[0, 1)``, else a :class:`ConfigError` naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ConfigError(f"{key}={value!r} must be a number in [0, 1)")
    return float(value)


class Environment(abc.ABC):
    """A task with verifiable answers.

    Subclasses implement :meth:`generate` (one random problem), :meth:`is_correct`, :meth:`format_ok` and
    :meth:`wrong_answer`, and may refine :meth:`key` (when two prompts are the same problem) and
    :meth:`well_formed` (what earns the format score).

    Attributes:
        name: the registry name.
        max_answer_chars: length of the longest correct answer in the environment's own format (that of
            :attr:`Problem.answer`), so that a generation budget of ``max_answer_chars + 1`` tokens fits it and EOS.
        max_prompt_chars: length of the longest prompt.
        eval_size: problems in the held-out evaluation set.
        eval_seed: seed of the evaluation set.
        format_score: reward of a finished, well-formed but wrong completion.
    """

    name: str = ""
    max_answer_chars: int
    max_prompt_chars: int

    def __init__(self, eval_size: int = 256, eval_seed: int = 1234, format_score: float = FORMAT_SCORE) -> None:
        self.eval_size = check_int(eval_size, "data.env_kwargs.eval_size", 1)
        self.eval_seed = check_int(eval_seed, "data.env_kwargs.eval_seed", 0)
        self.format_score = check_score(format_score, "data.env_kwargs.format_score")
        self._eval: list[Problem] | None = None
        self._eval_keys: frozenset[Any] = frozenset()

    # ------------------------------------------------------------------ generation
    @abc.abstractmethod
    def generate(self, rng: random.Random) -> Problem:
        """One random problem from the environment's distribution (evaluation problems included)."""

    def key(self, problem: Problem) -> Any:
        """What identifies a problem for the train/eval separation (default: its prompt)."""
        return problem.prompt

    def eval_set(self) -> list[Problem]:
        """The held-out set: ``eval_size`` distinct problems drawn with ``random.Random(eval_seed)`` (cached).

        Raises:
            ConfigError: the environment has too few distinct problems for ``eval_size`` of them.
        """
        if self._eval is None:
            rng = random.Random(self.eval_seed)
            problems: dict[Any, Problem] = {}
            for _ in range(EVAL_DRAWS * self.eval_size):
                problem = self.generate(rng)
                problems.setdefault(self.key(problem), problem)
                if len(problems) == self.eval_size:
                    break
            else:
                raise ConfigError(
                    f"data.env_kwargs.eval_size={self.eval_size} is more than the {self.name} environment's "
                    f"distinct problems (found {len(problems)}): lower it or make the problems larger"
                )
            self._eval = list(problems.values())
            self._eval_keys = frozenset(problems)
        return list(self._eval)

    def sample(self, n: int, rng: random.Random) -> list[Problem]:
        """``n`` training problems drawn with ``rng`` (deterministic given its state), none of the evaluation set.

        Raises:
            ConfigError: the evaluation set covers (nearly) all of the distribution.
        """
        self.eval_set()
        out = []
        for _ in range(n):
            for _ in range(MAX_REJECTIONS):
                problem = self.generate(rng)
                if self.key(problem) not in self._eval_keys:
                    out.append(problem)
                    break
            else:
                raise ConfigError(
                    f"data.env_kwargs.eval_size={self.eval_size} leaves (almost) no training problems in the "
                    f"{self.name} environment: lower it or make the problems larger"
                )
        return out

    # ------------------------------------------------------------------ scoring
    @abc.abstractmethod
    def is_correct(self, problem: Problem, completion: str, finished: bool) -> bool:
        """Whether ``completion`` (the text after the prompt, up to EOS) answers ``problem`` and EOS was produced."""

    @abc.abstractmethod
    def format_ok(self, completion: str) -> bool:
        """Whether ``completion`` has the answer format (independently of the problem)."""

    def well_formed(self, problem: Problem, completion: str) -> bool:
        """Whether ``completion`` earns the format score for ``problem`` (default: :meth:`format_ok`)."""
        return self.format_ok(completion)

    def reward(self, problem: Problem, completion: str, finished: bool) -> float:
        """1.0 correct and finished; ``format_score`` finished and well-formed but wrong; 0.0 otherwise."""
        if not finished:
            return 0.0
        if self.is_correct(problem, completion, finished):
            return 1.0
        return self.format_score if self.well_formed(problem, completion) else 0.0

    # ------------------------------------------------------------------ demonstrations
    @abc.abstractmethod
    def wrong_answer(self, problem: Problem, rng: random.Random) -> str:
        """A plausible wrong answer of the answer format (well-formed, so :meth:`reward` gives ``format_score``)."""

    def demonstration(self, problem: Problem, rng: random.Random, error_rate: float = 0.0) -> str:
        """An answer for supervised warm start: :attr:`Problem.answer` with probability ``1 - error_rate``, else
        :meth:`wrong_answer`. Draws one ``rng.random()`` (and what ``wrong_answer`` draws)."""
        if rng.random() < error_rate:
            return self.wrong_answer(problem, rng)
        return problem.answer

    def __repr__(self) -> str:
        return f"{type(self).__name__}(eval_size={self.eval_size}, eval_seed={self.eval_seed})"
