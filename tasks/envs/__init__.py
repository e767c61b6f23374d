"""RL environments with verifiable rewards, registered in ``ENVIRONMENT`` (``data.env=...`` of ``data=rl_prompts``).

============= =====================================================================================================
name          problems
============= =====================================================================================================
``addition``  ``"57+384="`` → ``"144"``: the sum of two 1..``digits``-digit numbers, digits reversed by default
              (answers of 1..``digits + 1`` characters), see :mod:`tasks.envs.addition`
``countdown`` ``"3 7 9>30:"`` → ``"7*3+9"``: an expression over the given numbers, each used once, that equals the
              target (TinyZero's Countdown), see :mod:`tasks.envs.countdown`
============= =====================================================================================================

The contract (:class:`~tasks.envs.base.Environment`; everything is plain ASCII text, one byte-level token per
character):

* ``Problem(prompt, answer, meta=())``: a frozen, hashable dataclass; ``answer`` is one correct completion.
* ``env.name``, ``env.max_answer_chars`` (longest answer in the environment's own format: a generation budget of
  ``max_answer_chars + 1`` tokens fits it and EOS), ``env.max_prompt_chars``, ``env.eval_size``, ``env.eval_seed``.
* ``env.sample(n, rng) -> list[Problem]``: training problems, deterministic given ``rng``'s state, never one of
  the evaluation set.
* ``env.eval_set() -> list[Problem]``: ``eval_size`` distinct problems, fixed by ``eval_seed``.
* ``env.reward(problem, completion, finished) -> float``: ``completion`` is the decoded text after the prompt up to
  (not including) EOS, ``finished`` whether EOS came within the budget. 1.0 correct and finished,
  ``format_score`` (0.1) finished and well-formed but wrong, 0.0 otherwise.
* ``env.is_correct(problem, completion, finished) -> bool``; ``env.format_ok(completion) -> bool`` (the answer
  format, independent of the problem).
* ``env.demonstration(problem, rng, error_rate) -> str``: the correct answer with probability ``1 - error_rate``,
  else a plausible wrong one of the same format (for a supervised warm start on imperfect data).

A new environment subclasses :class:`~tasks.envs.base.Environment`, implements ``generate``, ``is_correct``,
``format_ok`` and ``wrong_answer``, and registers with ``@ENVIRONMENT.register("name")``.
"""

from tasks.envs.addition import AdditionEnv
from tasks.envs.base import Environment, Problem
from tasks.envs.countdown import CountdownEnv, ExpressionError, evaluate_expression, parse_expression

__all__ = [
    "AdditionEnv",
    "CountdownEnv",
    "Environment",
    "ExpressionError",
    "Problem",
    "evaluate_expression",
    "parse_expression",
]
