"""RL environments (addition, Countdown) and the rl_prompts DataModule: rewards, the safe evaluator, the eval/train
separation, demonstrations, deterministic per-step prompts, resumption and the configs."""

from __future__ import annotations

import inspect
import random
import re
from collections import Counter
from fractions import Fraction
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

from tasks.app.runner import data_property
from tasks.data.rl_prompts import Chunks, RLPromptData, ShardSampler, StepSampler, step_rng
from tasks.envs import AdditionEnv, CountdownEnv, Environment, ExpressionError, Problem, evaluate_expression
from tasks.envs.addition import carry_columns
from tasks.envs.countdown import parse_expression
from tests.conftest import compose_config
from zoo.config import check_kwargs
from zoo.errors import ConfigError, RegistryError
from zoo.registries import DATA, ENVIRONMENT

CONF_DATA = Path(__file__).resolve().parents[2] / "conf" / "data"
ENVS = {"addition": AdditionEnv, "countdown": CountdownEnv}


def add(env: AdditionEnv, a: int, b: int) -> Problem:
    return Problem(prompt=f"{a}+{b}=", answer=env.render(a + b), meta=(a, b))


def countdown(numbers: tuple[int, ...], target: int, answer: str = "") -> Problem:
    prompt = f"{' '.join(map(str, numbers))}>{target}:"
    return Problem(prompt=prompt, answer=answer, meta=(numbers, target))


@pytest.fixture(params=sorted(ENVS))
def env(request) -> Environment:
    return ENVIRONMENT.build(request.param)


# ----------------------------------------------------------------------------------------------- registry
def test_registry_builds_both_environments():
    assert {"addition", "countdown"} <= set(ENVIRONMENT.names())
    assert isinstance(ENVIRONMENT.build("addition", digits=2), AdditionEnv)
    assert isinstance(ENVIRONMENT.build("countdown"), CountdownEnv)


# ----------------------------------------------------------------------------------------------- addition
def test_addition_problem_format():
    env = AdditionEnv()
    rng = random.Random(0)
    for problem in env.sample(2000, rng):
        a, b = problem.meta
        assert problem.prompt == f"{a}+{b}=" and problem.answer == str(a + b)[::-1]
        assert 0 <= a <= 999 and 0 <= b <= 999
        assert len(problem.prompt) <= env.max_prompt_chars and 1 <= len(problem.answer) <= env.max_answer_chars
        assert problem.prompt.isascii() and env.format_ok(problem.answer)
    lengths = Counter(len(p.answer) for p in env.sample(4000, rng))
    assert set(lengths) == {1, 2, 3, 4}  # variable length, up to digits + 1
    plain = AdditionEnv(reverse=False, digits=2, min_digits=2)
    for problem in plain.sample(200, rng):
        a, b = problem.meta
        assert 10 <= a <= 99 and 10 <= b <= 99 and problem.answer == str(a + b)


def test_addition_rewards():
    env = AdditionEnv()
    problem = add(env, 57, 384)  # 441
    assert problem.prompt == "57+384=" and problem.answer == "144"
    cases = {
        ("144", True): 1.0,
        ("441", True): 0.1,  # the unreversed sum: digits only, wrong
        ("0144", True): 0.1,  # 4 digits (≤ digits + 1): format credit
        ("01440", True): 0.0,  # 5 digits: too long for the format
        ("144", False): 0.0,  # no EOS within the budget
        ("", True): 0.0,
        ("14a", True): 0.0,
        ("14 4", True): 0.0,
        (" 144", True): 0.0,
        ("144\n", True): 0.0,
        ("-144", True): 0.0,
        ("١٤٤", True): 0.0,  # Arabic-Indic digits (str.isdigit() is true for them)
        ("１４４", True): 0.0,  # full-width digits
        ("14\ufffd", True): 0.0,  # an undecodable byte
    }
    for (completion, finished), expected in cases.items():
        assert env.reward(problem, completion, finished) == pytest.approx(expected), completion
        assert env.is_correct(problem, completion, finished) == (expected == 1.0)
    assert env.format_ok("144") and not env.format_ok("") and not env.format_ok("١٤٤")


def test_addition_leading_zeros_are_compared_as_text():
    rev = AdditionEnv()
    problem = add(rev, 750, 0)
    assert problem.answer == "057"  # a reversed answer may start with zeros
    assert rev.reward(problem, "057", True) == 1.0
    assert rev.reward(problem, "57", True) == pytest.approx(0.1)
    assert rev.reward(problem, "0570", True) == pytest.approx(0.1)
    plain = AdditionEnv(reverse=False)
    problem = add(plain, 750, 0)
    assert problem.answer == "750"
    assert plain.reward(problem, "750", True) == 1.0
    assert plain.reward(problem, "0750", True) == pytest.approx(0.1)  # no normalisation


def test_carry_columns():
    assert carry_columns(57, 384) == [0, 1]
    assert carry_columns(999, 1) == [0, 1, 2]
    assert carry_columns(12, 34) == []
    assert carry_columns(0, 0) == []
    assert carry_columns(5, 5) == [0]


def test_addition_wrong_answers_drop_a_carry_or_change_a_digit():
    env = AdditionEnv()
    rng = random.Random(0)
    wrong = {env.wrong_answer(add(env, 57, 384), rng) for _ in range(50)}
    assert wrong == {"134", "143"}  # 441 - 10, 441 - 100
    assert {env.wrong_answer(add(env, 5, 5), rng) for _ in range(10)} == {"0"}  # the carry out dropped
    for _ in range(50):  # no carry: one digit changed, never to a leading zero
        text = env.wrong_answer(add(env, 12, 34), rng)[::-1]
        assert text != "46" and len(text) == 2 and text[0] != "0" and sum(x != y for x, y in zip(text, "46")) == 1


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"digits": 0}, "data.env_kwargs.digits"),
        ({"min_digits": 4}, "data.env_kwargs.min_digits"),
        ({"digits": 1}, "data.env_kwargs.eval_size"),  # 100 problems: too few for 256 held out
        ({"reverse": "yes"}, "data.env_kwargs.reverse"),
        ({"eval_size": 0}, "data.env_kwargs.eval_size"),
        ({"format_score": 1.5}, "data.env_kwargs.format_score"),
    ],
)
def test_addition_config_errors_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        AdditionEnv(**kwargs)


# ----------------------------------------------------------------------------------------------- Countdown
def test_countdown_problems_are_solvable():
    env = CountdownEnv()
    assert env.max_answer_chars == 10  # "(20-19)*18"
    lengths = Counter()
    for problem in env.sample(3000, random.Random(0)):
        numbers, target = problem.meta
        assert len(numbers) == 3 and all(1 <= n <= 20 for n in numbers) and 1 <= target <= 500
        assert problem.prompt == f"{' '.join(map(str, numbers))}>{target}:" and problem.prompt.isascii()
        value, used = evaluate_expression(problem.answer)
        assert value == target and Counter(used) == Counter(numbers)
        assert env.reward(problem, problem.answer, True) == 1.0
        assert len(problem.prompt) <= env.max_prompt_chars
        lengths[len(problem.answer)] += 1
    assert max(lengths) == env.max_answer_chars and len(lengths) >= 4


def test_countdown_rewards():
    env = CountdownEnv()
    problem = countdown((3, 7, 9), 30, "7*3+9")
    cases = {
        "7*3+9": 1.0,
        "3*7+9": 1.0,
        "9+3*7": 1.0,
        "(7*3)+9": 1.0,  # redundant parentheses
        " 7 * 3 + 9 ": 1.0,  # spaces
        "(9+7)*3": 0.1,  # exactly the numbers, another value
        "9/3*7": 0.1,
        "7*3": 0.0,  # a number missing
        "7*3+9+3": 0.0,  # a number used twice
        "7*3+10": 0.0,  # a number not given
        "30": 0.0,
        "7*3+9=30": 0.0,
        "": 0.0,
        "7*3+": 0.0,
        "7×3+9": 0.0,  # unicode junk
        "７*3+9": 0.0,
        "7*3+9\n": 0.0,
        "7*3+9#": 0.0,
    }
    for completion, expected in cases.items():
        assert env.reward(problem, completion, True) == pytest.approx(expected), completion
        assert env.is_correct(problem, completion, True) == (expected == 1.0), completion
    assert env.reward(problem, "7*3+9", False) == 0.0  # unfinished
    assert not env.is_correct(problem, "7*3+9", False)
    fractional = countdown((4, 6, 9), 6)
    assert env.reward(fractional, "4/6*9", True) == 1.0  # exact rational arithmetic: 4/6 · 9 = 6
    assert env.reward(fractional, "4/(6*9)", True) == pytest.approx(0.1)
    repeated = countdown((7, 7, 3), 52)
    assert env.reward(repeated, "7*7+3", True) == 1.0  # a repeated number may be used as often as it is given
    assert env.reward(repeated, "7*3+3", True) == 0.0


def test_countdown_division_by_zero_is_malformed():
    env = CountdownEnv()
    problem = countdown((3, 7, 7), 10)
    assert env.reward(problem, "3/(7-7)", True) == 0.0
    assert not env.format_ok("3/(7-7)") and not env.well_formed(problem, "3/(7-7)")
    with pytest.raises(ExpressionError, match="division by zero"):
        evaluate_expression("3/(7-7)")


@pytest.mark.parametrize(
    "text",
    [
        "a+1",  # a name
        "abs(3)",  # a call
        "__import__('os')",
        "2**3",
        "(3).real",  # attribute access
        "3 .real",
        "3//2",
        "3%2",
        "-3+7",  # unary minus
        "+3",
        "3--4",
        "3<4",
        "[3]",
        "3,4",
        "3.0*2",
        "1e3",
        "1_0+2",
        "0x1f",
        "07+3",  # leading zero
        "00+3",
        "(7*3+9",
        "7*3+9)",
        "7 3",
        "",
        "   ",
        "7;3",
        "7\n+3",
        "(" * 300 + "1" + ")" * 300,  # too long to be an answer
    ],
)
def test_safe_evaluator_rejects(text):
    with pytest.raises(ExpressionError):
        parse_expression(text)
    assert not CountdownEnv().format_ok(text)


def test_safe_evaluator_values():
    assert evaluate_expression("7*3+9") == (30, [7, 3, 9])
    assert evaluate_expression("(7+3)/9") == (Fraction(10, 9), [7, 3, 9])
    assert evaluate_expression("20-19-18") == (-17, [20, 19, 18])  # left-associative
    assert evaluate_expression("20-(19-18)") == (19, [20, 19, 18])
    assert evaluate_expression("((((5))))") == (5, [5])


def test_countdown_wrong_answers_are_well_formed():
    env = CountdownEnv()
    rng = random.Random(1)
    for problem in env.sample(300, rng):
        wrong = env.wrong_answer(problem, rng)
        assert env.well_formed(problem, wrong) and not env.is_correct(problem, wrong, True), (problem, wrong)
        assert env.reward(problem, wrong, True) == pytest.approx(0.1)
    # a problem whose every random expression might hit the target still gets a wrong answer
    ones = countdown((1, 1), 2, "1+1")
    assert all(env.value(ones, env.wrong_answer(ones, rng)) != 2 for _ in range(20))


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"numbers": 1}, "data.env_kwargs.numbers"),
        ({"max_number": 0}, "data.env_kwargs.max_number"),
        ({"max_target": 0}, "data.env_kwargs.max_target"),
    ],
)
def test_countdown_config_errors_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        CountdownEnv(**kwargs)


def test_countdown_too_small_for_the_eval_set():
    env = CountdownEnv(numbers=2, max_number=2)  # a handful of distinct problems
    with pytest.raises(ConfigError, match=re.escape("data.env_kwargs.eval_size")):
        env.eval_set()


# ----------------------------------------------------------------------------------------------- both
def test_eval_set_is_fixed_distinct_and_held_out(env):
    name = env.name
    first, second = env.eval_set(), ENVIRONMENT.build(name).eval_set()
    assert first == second and len(first) == env.eval_size == 256
    keys = {env.key(p) for p in first}
    assert len(keys) == len(first)
    assert ENVIRONMENT.build(name, eval_seed=99).eval_set() != first
    assert len(ENVIRONMENT.build(name, eval_size=17).eval_set()) == 17
    training = env.sample(20_000, random.Random(0))
    assert not keys & {env.key(p) for p in training}
    if name == "addition":  # the smallest problems are common: some of them are held out
        assert any(len(p.prompt) == 4 for p in first)


def test_sample_is_deterministic_given_the_rng(env):
    a = env.sample(64, random.Random(5))
    assert a == env.sample(64, random.Random(5)) == ENVIRONMENT.build(env.name).sample(64, random.Random(5))
    assert a != env.sample(64, random.Random(6))
    assert all(isinstance(p, Problem) and hash(p) is not None for p in a)


def test_demonstrations(env):
    rng = random.Random(0)
    problems = env.sample(500, rng)
    assert all(env.is_correct(p, env.demonstration(p, rng, 0.0), True) for p in problems)
    for problem in problems:
        wrong = env.demonstration(problem, rng, 1.0)
        assert not env.is_correct(problem, wrong, True) and env.format_ok(wrong), (problem, wrong)
        assert env.reward(problem, wrong, True) == pytest.approx(env.format_score)
        assert len(wrong) <= env.max_answer_chars and wrong.isascii()
    demos = [env.demonstration(p, rng, 0.3) for p in problems * 4]
    realised = sum(not env.is_correct(p, d, True) for p, d in zip(problems * 4, demos)) / len(demos)
    assert realised == pytest.approx(0.3, abs=0.04)


def test_format_score_is_configurable(env):
    quiet = ENVIRONMENT.build(env.name, format_score=0.0)
    problem = quiet.sample(1, random.Random(0))[0]
    assert quiet.reward(problem, quiet.wrong_answer(problem, random.Random(0)), True) == 0.0


# ----------------------------------------------------------------------------------------------- the DataModule
def test_step_rng_is_stable():
    assert step_rng(0, 5).random() == step_rng(0, 5).random() == 0.07352262236453477  # no salted hash()
    assert step_rng(0, 5).random() != step_rng(0, 6).random() != step_rng(1, 5).random()
    assert step_rng(0, 5, rank=1).random() != step_rng(0, 5).random()


def test_datamodule_draws_the_same_prompts_per_step():
    dm = RLPromptData(prompts_per_step=8, steps_per_epoch=5, seed=3)
    other = RLPromptData(prompts_per_step=8, steps_per_epoch=5, seed=3)
    batches = list(dm.train_dataloader())
    assert len(batches) == len(dm.train_dataloader()) == 5
    assert all(isinstance(b, list) and len(b) == 8 and all(isinstance(p, Problem) for p in b) for b in batches)
    assert batches == list(other.train_dataloader())
    assert len({tuple(b) for b in batches}) == 5  # steps differ
    assert batches[2] == dm.train_dataloader().dataset[2]
    assert batches != list(RLPromptData(prompts_per_step=8, steps_per_epoch=5, seed=4).train_dataloader())
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(1)  # epoch 1 continues the step count: steps 5..9
    assert list(loader) == [dm.train_dataloader().dataset[g] for g in range(5, 10)]
    eval_keys = {dm.env.key(p) for p in dm.env.eval_set()}
    assert not eval_keys & {dm.env.key(p) for b in batches for p in b}


def test_train_loader_resumes_mid_epoch():
    dm = RLPromptData(prompts_per_step=2, steps_per_epoch=6)
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(1)
    everything = []
    for batch in loader:
        everything.append(batch)
        if len(everything) == 2:
            state = loader.state_dict()
    assert state == {"epoch": 1, "steps": 2}
    fresh = dm.train_dataloader()
    fresh.load_state_dict(state)
    fresh.sampler.set_epoch(1)
    assert list(fresh) == everything[2:]
    assert fresh.state_dict() == {"epoch": 1, "steps": 6}
    other = dm.train_dataloader()
    other.load_state_dict(state)  # a state of another epoch is ignored
    assert len(list(other)) == 6


@pytest.mark.parametrize("eval_batch_size", [1, 100, 256, 1000])
def test_eval_batches_cover_the_eval_set_once(eval_batch_size):
    dm = RLPromptData(eval_batch_size=eval_batch_size)
    for loader in (dm.val_dataloader(), dm.test_dataloader()):
        batches = list(loader)
        assert all(isinstance(b, list) and 0 < len(b) <= eval_batch_size for b in batches)
        assert [p for b in batches for p in b] == dm.env.eval_set()
        assert len(batches) == len(loader) == -(-256 // eval_batch_size)


def test_shard_sampler_splits_without_duplicates():
    chunks = Chunks(list(range(10)), 3)  # type: ignore[arg-type]
    assert [chunks[i] for i in range(len(chunks))] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    balanced = Chunks.balanced(list(range(10)), 3, world=2)  # type: ignore[arg-type]
    # a multiple of 2 chunks of ≤ 3 (each process as many batches), sizes within one, every problem once
    assert [balanced[i] for i in range(len(balanced))] == [[0, 1], [2, 3, 4], [5, 6], [7, 8, 9]]
    shards = [list(ShardSampler(7, 3, r)) for r in range(3)]
    assert sorted(i for s in shards for i in s) == list(range(7))
    assert [len(ShardSampler(7, 3, r)) for r in range(3)] == [3, 2, 2]
    assert list(StepSampler(4)) == [0, 1, 2, 3]


def test_datamodule_errors():
    with pytest.raises(RegistryError, match=r"addition.*countdown"):
        RLPromptData(env="additon")
    with pytest.raises(ConfigError, match=re.escape("data.env_kwargs.digitz")):
        RLPromptData(env_kwargs={"digitz": 3})
    with pytest.raises(ConfigError, match=re.escape("data.env_kwargs.digits")):
        RLPromptData(env_kwargs={"digits": "3"})
    with pytest.raises(ConfigError, match=re.escape("data.prompts_per_step")):
        RLPromptData(prompts_per_step=0)
    with pytest.raises(ConfigError, match=re.escape("data.vocab_size")):
        RLPromptData(vocab_size=100)
    dm = RLPromptData(env="countdown", env_kwargs={"numbers": 4})
    assert dm.env.numbers == 4 and dm.hparams["env_kwargs"] == {"numbers": 4}
    batch = dm.env.eval_set()[:3]
    assert dm.transfer_batch_to_device(batch, torch.device("cpu"), 0) is batch


class RecordProblems(L.LightningModule):
    """Records the problems of every training step; one parameter so that there is something to optimise."""

    def __init__(self, stop_at: int | None = None) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[list[Problem]] = []
        self.stop_at = stop_at

    def training_step(self, problems, batch_idx):
        assert isinstance(problems, list) and all(isinstance(p, Problem) for p in problems)
        self.seen.append(problems)
        loss = (self.weight - len(problems[0].prompt)) ** 2
        self.log("train/loss", loss, batch_size=len(problems))
        return loss

    def on_train_batch_end(self, *args):
        if self.stop_at is not None and self.trainer.global_step >= self.stop_at:
            self.trainer.should_stop = True

    def validation_step(self, problems, batch_idx):
        self.log("val/n", float(len(problems)), batch_size=len(problems), reduce_fx="sum")

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def fit_recording(tmp_path, name, stop_at=None, ckpt_path=None) -> list[list[Problem]]:
    from lightning.pytorch.callbacks import ModelCheckpoint

    module = RecordProblems(stop_at)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=7,
        limit_val_batches=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ModelCheckpoint(dirpath=tmp_path / name, every_n_train_steps=1, save_last=True)],
        default_root_dir=tmp_path,
    )
    dm = RLPromptData(prompts_per_step=4, steps_per_epoch=3)  # the runs cross two epoch boundaries
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    return module.seen


def test_lightning_fit_validates_and_resumes_mid_epoch(tmp_path):
    dm = RLPromptData(prompts_per_step=4, steps_per_epoch=2, eval_batch_size=100)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(RecordProblems(), datamodule=dm)  # Lightning leaves the lists of frozen dataclasses alone
    assert trainer.global_step == 2 and trainer.callback_metrics["val/n"] == 256
    assert isinstance(trainer.train_dataloader.sampler, StepSampler)  # kept, not replaced

    straight = fit_recording(tmp_path, "straight")
    first = fit_recording(tmp_path, "resumed", stop_at=4)
    ckpt = torch.load(tmp_path / "resumed" / "last.ckpt", weights_only=False)
    assert ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 1, "steps": 1}]
    second = fit_recording(tmp_path, "resumed", ckpt_path=str(tmp_path / "resumed" / "last.ckpt"))
    assert len(straight) == 7 and len(first) == 4 and first + second == straight
    assert straight[0] != straight[3]


# ----------------------------------------------------------------------------------------------- configs
@pytest.mark.parametrize("name", ["addition", "countdown"])
def test_configs_list_every_key(name, tmp_path):
    cfg = OmegaConf.load(CONF_DATA / f"{name}.yaml")
    cls = DATA.get(cfg.name)
    assert cls is RLPromptData
    params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    assert sorted(k for k in cfg if k != "name") == sorted(params)
    env_cls = ENVIRONMENT.get(cfg.env)
    env_params = [p for p in inspect.signature(env_cls.__init__).parameters if p != "self"]
    assert sorted(cfg.env_kwargs) == sorted(env_params)
    tuned = {"addition": {"digits"}}.get(name, set())  # conf/data/addition.yaml uses 2 digits (CPU warm start)
    for key in env_params:  # otherwise the yaml's values are the constructor's defaults
        if key not in tuned:
            assert cfg.env_kwargs[key] == inspect.signature(env_cls.__init__).parameters[key].default, key
    values = {k: OmegaConf.to_container(cfg)[k] for k in params if k != "seed"}
    check_kwargs(cls, values, "data")
    assert data_property(cfg, "vocab_size") == cfg.vocab_size == 257
    assert OmegaConf.to_yaml(cfg).count("${seed}") == 1

    composed = compose_config([f"data={name}", "seed=7"], tmp_path / "run")
    data = OmegaConf.to_container(composed.data, resolve=True)
    assert data.pop("name") == "rl_prompts" and data["seed"] == 7
    dm = RLPromptData(**data)
    assert dm.env.name == name and dm.hparams["seed"] == 7
