"""Variable-length addition: ``"57+384="`` → ``"144"`` (441 with its digits reversed).

Each operand first draws its digit count uniformly from ``min_digits..digits``, then a number with that many
digits (one-digit numbers include 0), so sums have 1 to ``digits + 1`` digits: the answers differ in length, which
is what makes the loss-aggregation modes of GRPO / DAPO / CISPO weigh samples differently. With the defaults
(1..3 digits) about 6 % of the answers have 1 digit, 31 % 2, 55 % 3 and 8 % 4 (mean 2.65).

The answer is the sum's decimal digits, least significant first when ``reverse`` is on (the default): that is the
order in which the digits are computed, carry by carry, and small transformers learn reversed sums much faster
than the usual order (Lee et al. 2023, "Teaching Arithmetic to Small Transformers", arXiv 2307.03381). The answer
is compared as a string, without normalisation: ``"057"`` (750 reversed) is correct, ``"57"`` and ``"0570"`` are
not; in the plain order a leading zero (``"0750"``) is wrong.

Reward: 1.0 for the exact answer followed by EOS; ``format_score`` (0.1) for a finished answer of 1 to
``digits + 1`` ASCII digits that is wrong; 0 otherwise (no EOS within the budget, empty, any other character).
Wrong demonstrations drop one carry (the sum minus ``10^(k+1)`` for a column ``k`` that carries), or, when no
column carries, change one digit (never to a leading zero).
"""

from __future__ import annotations

import random

from tasks.envs.base import Environment, Problem, check_int
from zoo.errors import ConfigError
from zoo.registries import ENVIRONMENT

DIGITS = frozenset("0123456789")


def carry_columns(a: int, b: int) -> list[int]:
    """The columns (0 = units) whose digit sum, with the incoming carry, is 10 or more, in ``a + b``."""
    columns, carry, k = [], 0, 0
    while a or b:
        carry = int(a % 10 + b % 10 + carry >= 10)
        if carry:
            columns.append(k)
        a, b, k = a // 10, b // 10, k + 1
    return columns


@ENVIRONMENT.register("addition")
class AdditionEnv(Environment):
    """``a+b=`` with ``min_digits..digits``-digit operands; the answer is the sum, reversed by default.

    Args:
        digits: most digits of an operand (answers have up to ``digits + 1``).
        min_digits: fewest digits of an operand.
        reverse: write the sum least-significant digit first.
        eval_size: problems in the held-out evaluation set.
        eval_seed: seed of the evaluation set.
        format_score: reward of a finished, all-digit but wrong answer.

    ``Problem.meta`` is ``(a, b)``.
    """

    name = "addition"

    def __init__(
        self,
        digits: int = 3,
        min_digits: int = 1,
        reverse: bool = True,
        eval_size: int = 256,
        eval_seed: int = 1234,
        format_score: float = 0.1,
    ) -> None:
        super().__init__(eval_size, eval_seed, format_score)
        self.digits = check_int(digits, "data.env_kwargs.digits", 1)
        self.min_digits = check_int(min_digits, "data.env_kwargs.min_digits", 1, self.digits)
        if not isinstance(reverse, bool):
            raise ConfigError(f"data.env_kwargs.reverse={reverse!r} must be true or false")
        self.reverse = reverse
        operands = 10**self.digits - (10 ** (self.min_digits - 1) if self.min_digits > 1 else 0)
        if 2 * self.eval_size > operands**2:
            raise ConfigError(
                f"data.env_kwargs.eval_size={self.eval_size} is more than half of the {operands**2} problems with "
                f"{self.min_digits}..{self.digits}-digit operands: lower it or raise data.env_kwargs.digits"
            )
        self.max_answer_chars = self.digits + 1
        self.max_prompt_chars = 2 * self.digits + 2

    def render(self, value: int) -> str:
        """The answer text of a sum."""
        text = str(value)
        return text[::-1] if self.reverse else text

    def _operand(self, rng: random.Random) -> int:
        count = rng.randint(self.min_digits, self.digits)
        return rng.randint(0 if count == 1 else 10 ** (count - 1), 10**count - 1)

    def generate(self, rng: random.Random) -> Problem:
        a = self._operand(rng)
        b = self._operand(rng)
        return Problem(prompt=f"{a}+{b}=", answer=self.render(a + b), meta=(a, b))

    def is_correct(self, problem: Problem, completion: str, finished: bool) -> bool:
        return finished and completion == problem.answer

    def format_ok(self, completion: str) -> bool:
        """1 to ``digits + 1`` ASCII digits (leading zeros allowed; other digit characters are not)."""
        return 1 <= len(completion) <= self.digits + 1 and set(completion) <= DIGITS

    def wrong_answer(self, problem: Problem, rng: random.Random) -> str:
        a, b = problem.meta
        total = a + b
        columns = carry_columns(a, b)
        if columns:  # drop the carry out of one column
            return self.render(total - 10 ** (rng.choice(columns) + 1))
        text = str(total)
        position = rng.randrange(len(text))
        leading = position == 0 and len(text) > 1
        digit = rng.choice([d for d in "0123456789" if d != text[position] and not (leading and d == "0")])
        return self.render(int(text[:position] + digit + text[position + 1 :]))

    def __repr__(self) -> str:
        return (
            f"AdditionEnv(digits={self.digits}, min_digits={self.min_digits}, reverse={self.reverse}, "
            f"eval_size={self.eval_size}, eval_seed={self.eval_seed})"
        )
