"""The two front ends as users run them: tools/train.py (Hydra) and tools/cli.py (LightningCLI)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import ROOT, TINY, compose_config, needs_fashion_mnist, run_tool

TRAIN = str(ROOT / "tools" / "train.py")
CLI = str(ROOT / "tools" / "cli.py")


def hydra_run(tmp_path: Path, *overrides: str, timeout: int = 600):
    return run_tool(TRAIN, *overrides, cwd=tmp_path, env={"ZOO_LOG_DIR": str(tmp_path / "logs")}, timeout=timeout)


def metrics_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "logs").glob("**/metrics.json"))


@pytest.mark.slow
@needs_fashion_mnist
def test_the_main_command_runs(tmp_path):
    """The README's main job, exactly, shortened by fast_dev_run; it prints none of the old noise."""
    result = hydra_run(tmp_path, "task=vision", "model.ca=mca", "trainer.fast_dev_run=true")
    assert result.returncode == 0, result.stderr[-3000:]
    for noise in NOISE:
        assert noise not in result.stdout + result.stderr, noise
    [metrics] = metrics_files(tmp_path)
    assert "test/acc" in json.loads(metrics.read_text())
    assert metrics.parent.parent.name == "runs" and metrics.parent.parent.parent.name == "vision"
    assert "ca: mca" in (metrics.parent / ".hydra" / "config.yaml").read_text()


@pytest.mark.slow
@needs_fashion_mnist
def test_multirun_over_channel_attention(tmp_path):
    result = hydra_run(tmp_path, "-m", "model.ca=none,se,eca,mca", *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    found = metrics_files(tmp_path)
    assert len(found) == 4 and {p.parent.name for p in found} == {"0", "1", "2", "3"}
    hparams = [(p.parent / "csv" / "hparams.yaml").read_text() for p in found]
    assert {line.split(": ")[1] for text in hparams for line in text.splitlines() if line.startswith("ca: ")} == {
        "none",
        "se",
        "eca",
        "mca",
    }
    [sweep_dir] = (tmp_path / "logs" / "vision" / "multiruns").iterdir()
    summary = run_tool(
        str(ROOT / "tools/summarize_runs.py"), str(sweep_dir), "--output", str(tmp_path / "s.json"), cwd=tmp_path
    )
    assert summary.returncode == 0, summary.stderr
    rows = {r["model.ca"]: r for r in json.loads((tmp_path / "s.json").read_text())["rows"]}
    assert set(rows) == {"none", "se", "eca", "mca"} and all(r["runs"] == 1 for r in rows.values())
    assert "| mca | 1 |" in summary.stdout


@pytest.mark.slow
@needs_fashion_mnist
def test_optuna_sweep(tmp_path):
    result = hydra_run(
        tmp_path,
        "-m",
        "hparams_search=vision_optuna",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.n_startup_trials=1",
        *TINY,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    [optimization] = (tmp_path / "logs").glob("**/optimization_results.yaml")
    text = optimization.read_text()
    assert "best_params" in text and "model.ca" in text and "best_value" in text
    assert len(metrics_files(tmp_path)) == 2


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["model.ca=mcx"], ["Unknown channel_attention 'mcx'", "model.ca", "mca_e", "Did you mean 'mca'"]),
        (["model.backbone=resnet21"], ["Unknown backbone 'resnet21'", "model.backbone", "resnet20"]),
        (["data.name=fashion"], ["Unknown data 'fashion'", "data.name", "fashion_mnist"]),
        (["trainer.max_epochs=abc"], ["trainer.max_epochs='abc' has the wrong type", "int"]),
        (["+model.cax=5"], ["model.cax is not an option of VisionTask", "Did you mean model.ca"]),
        (["data.batch_size=1.5"], ["data.batch_size=1.5 has the wrong type"]),
        (["data.root=/nonexistent/fmnist"], ["Fashion-MNIST not found", "apt-get install dataset-fashion-mnist"]),
        (["strategy=fsdp2", "+strategy.shard_all=true"], ["strategy.shard_all is not an option of FSDP2Strategy"]),
        (
            ["strategy=fsdp2", "strategy.activation_checkpointing=some"],
            ["strategy.activation_checkpointing='some' is unknown; valid: none, full, selective"],
        ),
        (
            ["strategy=fsdp2", "strategy.expert_parallel_size=2", "trainer=cpu"],
            ["strategy.expert_parallel_size=2: CifarResNet has no MoE layers; valid: 1"],
        ),
    ],
)
def test_bad_input_exits_2_with_one_paragraph(tmp_path, overrides, expected):
    result = hydra_run(tmp_path, "task=vision", *overrides, "trainer.fast_dev_run=true", timeout=300)
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("error: ")
    for fragment in expected:
        assert fragment in message, (fragment, message)
    assert "Traceback" not in result.stderr
    assert not list((tmp_path / "logs").glob("*/runs/*")), "a failed run left its directory"


def test_unknown_config_group_option_lists_choices(tmp_path):
    result = hydra_run(tmp_path, "task=visoin", timeout=120)
    assert result.returncode != 0 and "Available options" in result.stderr and "vision" in result.stderr


CLI_TASKS = {"vision": "VisionTask", "lm": "LMTask", "rl": "RLTask", "detection": "DetectionTask"}


@pytest.mark.parametrize("task", ["lm", "rl", "vision", "detection"])
def test_hydra_and_lightning_cli_build_identical_hyperparameters(tmp_path, task):
    from tasks.app.cli import make_cli
    from tasks.app.runner import build

    cfg = compose_config([f"task={task}"], tmp_path / "run")
    hydra_task, hydra_data, _ = build(cfg)
    cli = make_cli(["--config", str(ROOT / f"conf/cli/{task}.yaml")], run=False)

    def init_args(hparams):  # LightningCLI adds its bookkeeping (_class_path, _instantiator) beside the arguments
        return {k: v for k, v in hparams.items() if not k.startswith("_")}

    assert init_args(cli.model.hparams) == dict(hydra_task.hparams)
    assert init_args(cli.datamodule.hparams) == dict(hydra_data.hparams)
    assert cli.model.hparams["_class_path"] == f"tasks.{CLI_TASKS[task]}"
    assert type(cli.model) is type(hydra_task) and type(cli.datamodule) is type(hydra_data)
    assert cli.trainer.max_epochs == cfg.trainer.max_epochs and cli.trainer.max_steps == cfg.trainer.max_steps


def test_cli_sets_the_fsdp2_strategy_from_the_hydra_group():
    from tasks.app.cli import hydra_to_cli

    cfg = compose_config(["task=lm", "strategy=fsdp2", "strategy.activation_checkpointing=full"], ROOT / "logs" / "x")
    strategy = hydra_to_cli(cfg)["trainer"]["strategy"]
    assert strategy["class_path"] == "tasks.app.strategies.FSDP2Strategy"
    assert strategy["init_args"]["activation_checkpointing"] == "full"


def test_both_front_ends_build_the_network_on_the_meta_device_only_for_a_sharding_strategy(tmp_path):
    """Under ``strategy=fsdp2`` the model is built on the meta device (``configure_model`` shards and initialises
    it); under ``single`` it is built whole, as before. Same for LightningCLI's ``--trainer.strategy``."""
    from tasks.app.cli import make_cli
    from tasks.app.runner import build
    from zoo.parallel import has_meta_tensors

    sharded, _, _ = build(compose_config(["task=lm", "strategy=fsdp2"], tmp_path / "a"))
    whole, _, _ = build(compose_config(["task=lm"], tmp_path / "b"))
    assert has_meta_tensors(sharded.model) and not has_meta_tensors(whole.model)
    assert not has_meta_tensors(sharded.val_ppl)  # metrics are real tensors: only the network waits
    config = ["--config", str(ROOT / "conf/cli/lm.yaml")]
    cli = make_cli([*config, "--trainer.strategy", "{class_path: tasks.app.strategies.FSDP2Strategy}"], run=False)
    assert has_meta_tensors(cli.model.model)
    assert not has_meta_tensors(make_cli(config, run=False).model.model)


@pytest.mark.parametrize("task", sorted(CLI_TASKS))
def test_cli_config_is_generated_from_the_hydra_preset(task):
    import importlib.util

    spec = importlib.util.spec_from_file_location("hydra2cli", ROOT / "tools" / "hydra2cli.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (ROOT / f"conf/cli/{task}.yaml").read_text() == module.render([f"task={task}"]), (
        f"conf/cli/{task}.yaml is stale: run python tools/hydra2cli.py task={task} -o conf/cli/{task}.yaml"
    )


def test_lightning_cli_fit_and_bad_name(tmp_path):
    args = [
        "fit",
        "--config",
        str(ROOT / "conf/cli/vision.yaml"),
        "--model.backbone_kwargs",
        "{widths: [4, 8, 8]}",
        "--trainer.fast_dev_run",
        "true",
    ]
    ok = run_tool(CLI, *args, "--model.ca", "eca", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr[-3000:]
    bad = run_tool(CLI, *args, "--model.ca", "mcx", cwd=tmp_path)
    assert bad.returncode == 2 and "Unknown channel_attention 'mcx'" in bad.stderr and "Traceback" not in bad.stderr


def test_list_tool(tmp_path):
    result = run_tool(str(ROOT / "tools" / "list.py"), "channel_attention", "mca*", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    names = [line.split()[0] for line in result.stdout.splitlines()[1:]]
    assert names == ["mca", "mca_e", "mca_s", "mca_t"]


#: What a run used to print that tells a user nothing (issue: "a run prints what matters").
NOISE = (
    "💡 Tip",  # Lightning's litlogger advertisement
    "LeafSpec",  # a deprecation inside Lightning's pytree helper
    "Trainer already configured with model summary",
    "FLOPs",  # a column of zeros without an example input
    "eval mode",  # "Found N module(s) in eval mode" (RL's policy after the warm-start evaluation)
    "could not find the monitored key",  # ModelCheckpoint when a step budget ended between validations
    "exists and is not empty",  # the LM's tokenizer.json written before ModelCheckpoint's setup
    "will override existing callbacks",  # the LM's throughput monitor attached again for test
    "Epoch 0/-2",
)

LM_SHORT = [
    "task=lm", "model.config.hidden_size=32", "model.config.num_heads=2", "model.config.num_kv_heads=1",
    "model.config.head_dim=16", "model.config.intermediate_size=48", "data.max_docs=40", "data.seq_len=64",
    "data.batch_size=8", "trainer.max_steps=6", "trainer.val_check_interval=4", "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2", "callbacks.progress_bar.interval=0",
]  # fmt: skip
RL_SHORT = [
    "task=rl", "rl.warm_start_steps=5", "rl.group_size=2", "data.prompts_per_step=2", "data.steps_per_epoch=2",
    "data.env_kwargs.eval_size=8", "rl.rollouts=3", "callbacks.progress_bar.interval=0",
]  # fmt: skip


@pytest.mark.parametrize(
    ("overrides", "lines"),
    [
        (LM_SHORT, ["step 1/6 (17%)", "step 6/6 (100%)", "validation (epoch 1, step 4): val/loss",
                    "validation (epoch 1, step 6)"]),
        (RL_SHORT, ["rollout 1/3 (33%)", "rollout 3/3 (100%)", "validation (epoch 1, rollout 2): val/acc",
                    "validation (epoch 2, rollout 3)"]),
    ],
    ids=["lm", "rl"],
)  # fmt: skip
def test_a_short_run_to_a_file_prints_plain_progress_and_no_noise(tmp_path, overrides, lines):
    """Output to a pipe: one plain line per interval (0 here: every step) and per validation, a final line; exit
    0; last.ckpt and metrics.json; none of the noise Lightning and PyTorch used to print."""
    cache = [f"data.cache_dir={tmp_path / 'cache'}"] if overrides[0] == "task=lm" else []
    result = hydra_run(tmp_path, *overrides, *cache)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    for line in lines:
        assert line in output, (line, output[-3000:])
    for noise in NOISE:
        assert noise not in output, (noise, output[-3000:])
    [metrics] = metrics_files(tmp_path)
    assert (metrics.parent / "checkpoints" / "last.ckpt").is_file()
