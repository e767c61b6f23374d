"""Countdown (TinyZero's task): reach a target with an arithmetic expression that uses each given number once.

Prompt ``"3 7 9>30:"`` — the numbers in drawn order, ``>``, the target, ``:``; answer e.g. ``"7*3+9"``. The
numbers are ``numbers`` integers in ``1..max_number``; the target is the value of a random expression over all of
them whose every intermediate result is a positive integer (``+``, ``*``; ``-`` when the result stays positive;
``/`` when it divides exactly), redrawn until it is at most ``max_target``. :attr:`Problem.answer` is that
expression with the fewest parentheses, and ``Problem.meta`` is ``(numbers, target)``. Two prompts with the same
multiset of numbers and the same target are the same problem for the train/eval separation.

An answer may use ``+ - * /``, parentheses, spaces and decimal integers (no unary minus, no ``**`` or ``//``, no
names). It is parsed with :mod:`ast` — never ``eval`` — and evaluated exactly with :class:`~fractions.Fraction`
(intermediate values may be negative or fractional). Reward (TinyZero's): 1.0 when the expression uses exactly the
given multiset of numbers and equals the target; ``format_score`` (0.1) when it uses exactly those numbers but has
another value; 0 when it does not parse, uses other numbers, divides by zero, or is not finished.

Wrong demonstrations are random expressions over the same numbers (``/`` only when exact, ``-`` also below zero)
whose value is not the target.
"""

from __future__ import annotations

import ast
import random
from collections import Counter
from fractions import Fraction

from tasks.envs.base import Environment, Problem, check_int
from zoo.errors import ConfigError
from zoo.registries import ENVIRONMENT

ALLOWED_CHARS = frozenset("0123456789+-*/() ")
MAX_EXPRESSION_CHARS = 256  # longer completions are malformed (bounds the parser's work)
OPERATORS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}
ATOM = 3
MAX_TRIES = 10_000


class ExpressionError(ValueError):
    """A completion that is not an allowed arithmetic expression, or that divides by zero."""


def parse_expression(text: str) -> ast.expr:
    """The syntax tree of an answer, checked to hold only decimal integers and binary ``+ - * /``.

    Raises:
        ExpressionError: other characters (also any non-ASCII), a syntax error, or any other node (names, calls,
            attributes, unary operators, ``**``, ``//``, ``%``, comparisons, floats).
    """
    if not text.strip() or len(text) > MAX_EXPRESSION_CHARS or not set(text) <= ALLOWED_CHARS:
        raise ExpressionError(f"not an expression of digits, + - * / ( ) and spaces: {text!r}")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise ExpressionError(f"does not parse: {text!r}") from exc
    stripped = text.strip()
    for node in ast.walk(tree.body):
        if isinstance(node, ast.BinOp):
            if type(node.op) not in OPERATORS:
                raise ExpressionError(f"operator {type(node.op).__name__} is not allowed")
        elif isinstance(node, ast.Constant):
            if type(node.value) is not int or ast.get_source_segment(stripped, node) != str(node.value):
                raise ExpressionError(f"{ast.get_source_segment(stripped, node)!r} is not a plain decimal integer")
        elif not isinstance(node, (ast.operator,)):
            raise ExpressionError(f"{type(node).__name__} is not allowed")
    return tree.body


def evaluate(node: ast.expr) -> Fraction:
    """The exact value of a tree from :func:`parse_expression`.

    Raises:
        ExpressionError: a division by zero.
    """
    if isinstance(node, ast.Constant):
        return Fraction(node.value)
    assert isinstance(node, ast.BinOp)
    left, right = evaluate(node.left), evaluate(node.right)
    op = OPERATORS[type(node.op)]
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "*":
        return left * right
    if right == 0:
        raise ExpressionError("division by zero")
    return left / right


def leaves(node: ast.expr) -> list[int]:
    """The integers of a tree from :func:`parse_expression`, left to right."""
    if isinstance(node, ast.Constant):
        return [node.value]
    assert isinstance(node, ast.BinOp)
    return leaves(node.left) + leaves(node.right)


def evaluate_expression(text: str) -> tuple[Fraction, list[int]]:
    """``(value, numbers used)`` of an answer, safely (see :func:`parse_expression`).

    Raises:
        ExpressionError: the text is not an allowed expression, or divides by zero.
    """
    tree = parse_expression(text)
    return evaluate(tree), leaves(tree)


def combine(left: tuple[str, int], op: str, right: tuple[str, int]) -> tuple[str, int]:
    """``(text, precedence)`` of ``left op right`` with the parentheses that precedence needs, and no others."""
    prec = PRECEDENCE[op]
    left_text = f"({left[0]})" if left[1] < prec else left[0]
    needs = right[1] < prec or (right[1] == prec and op in "-/")
    right_text = f"({right[0]})" if needs else right[0]
    return f"{left_text}{op}{right_text}", prec


def random_expression(numbers: list[int], rng: random.Random, *, positive: bool) -> tuple[str, Fraction]:
    """A random binary expression over all of ``numbers`` (each once): ``(text, value)``.

    Two random sub-expressions are joined by a random operator until one is left; ``/`` only when it divides
    exactly (so every intermediate value is an integer). ``positive``: ``-`` only when the result is positive.
    """
    items = [(Fraction(n), (str(n), ATOM)) for n in numbers]
    while len(items) > 1:
        i, j = rng.sample(range(len(items)), 2)
        (x, x_text), (y, y_text) = items[i], items[j]
        ops = ["+", "*"]
        if not positive or x > y:
            ops.append("-")
        if y != 0 and x % y == 0:
            ops.append("/")
        op = rng.choice(ops)
        value = {"+": x + y, "-": x - y, "*": x * y, "/": x / y if y else x}[op]
        items = [item for k, item in enumerate(items) if k not in (i, j)] + [(value, combine(x_text, op, y_text))]
    value, (text, _) = items[0]
    return text, value


@ENVIRONMENT.register("countdown")
class CountdownEnv(Environment):
    """Countdown: ``numbers`` integers in ``1..max_number`` and a target; answer an expression using each once.

    Args:
        numbers: how many numbers a problem gives (at least 2).
        max_number: the largest number.
        max_target: the largest target.
        eval_size: problems in the held-out evaluation set.
        eval_seed: seed of the evaluation set.
        format_score: reward of a finished expression that uses exactly the given numbers but misses the target.

    ``max_answer_chars`` is the length of the longest answer in the canonical form (``numbers`` numbers of up to
    ``len(str(max_number))`` digits, ``numbers - 1`` operators and ``numbers - 2`` pairs of parentheses): 10 for
    the defaults. Correct answers with spaces or redundant parentheses can be longer.
    """

    name = "countdown"

    def __init__(
        self,
        numbers: int = 3,
        max_number: int = 20,
        max_target: int = 500,
        eval_size: int = 256,
        eval_seed: int = 1234,
        format_score: float = 0.1,
    ) -> None:
        super().__init__(eval_size, eval_seed, format_score)
        self.numbers = check_int(numbers, "data.env_kwargs.numbers", 2)
        self.max_number = check_int(max_number, "data.env_kwargs.max_number", 1)
        self.max_target = check_int(max_target, "data.env_kwargs.max_target", 1)
        width = len(str(self.max_number))
        self.max_answer_chars = self.numbers * width + (self.numbers - 1) + 2 * (self.numbers - 2)
        self.max_prompt_chars = self.numbers * (width + 1) + len(str(self.max_target)) + 1

    def generate(self, rng: random.Random) -> Problem:
        for _ in range(MAX_TRIES):
            values = [rng.randint(1, self.max_number) for _ in range(self.numbers)]
            text, value = random_expression(values, rng, positive=True)
            if value <= self.max_target:
                target = int(value)
                prompt = f"{' '.join(map(str, values))}>{target}:"
                return Problem(prompt=prompt, answer=text, meta=(tuple(values), target))
        raise ConfigError(
            f"data.env_kwargs.max_target={self.max_target} is too small: no target found in {MAX_TRIES} "
            f"expressions over {self.numbers} numbers up to {self.max_number}"
        )

    def key(self, problem: Problem) -> tuple[tuple[int, ...], int]:
        values, target = problem.meta
        return tuple(sorted(values)), target

    def value(self, problem: Problem, completion: str) -> Fraction | None:
        """The completion's value if it is an allowed expression over exactly the problem's numbers, else None."""
        try:
            tree = parse_expression(completion)
            if Counter(leaves(tree)) != Counter(problem.meta[0]):
                return None
            return evaluate(tree)
        except ExpressionError:
            return None

    def is_correct(self, problem: Problem, completion: str, finished: bool) -> bool:
        return finished and self.value(problem, completion) == problem.meta[1]

    def well_formed(self, problem: Problem, completion: str) -> bool:
        """An allowed expression over exactly the problem's numbers (whatever its value), no division by zero."""
        return self.value(problem, completion) is not None

    def format_ok(self, completion: str) -> bool:
        """An allowed arithmetic expression that evaluates (no division by zero), whichever numbers it uses."""
        try:
            evaluate_expression(completion)
        except ExpressionError:
            return False
        return True

    def wrong_answer(self, problem: Problem, rng: random.Random) -> str:
        values, target = problem.meta
        for _ in range(100):
            shuffled = list(values)
            rng.shuffle(shuffled)
            text, value = random_expression(shuffled, rng, positive=False)
            if value != target:
                return text
        # every drawn expression hit the target: the sum and the first number minus the others differ
        plus = "+".join(map(str, values))
        return plus if sum(values) != target else "-".join(map(str, values))

    def __repr__(self) -> str:
        return (
            f"CountdownEnv(numbers={self.numbers}, max_number={self.max_number}, max_target={self.max_target}, "
            f"eval_size={self.eval_size}, eval_seed={self.eval_seed})"
        )
