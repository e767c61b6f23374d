"""task=vlm from the real Hydra config (vlm_tiny_convnet on a small generated copy_paste_vqa set), on the CPU."""

from __future__ import annotations

import json

import pytest
import torch

from tasks.app.runner import build, train
from tasks.data.vlm import QUESTION_TYPES
from tasks.data.vlm.copy_paste_vqa import NAMES
from tasks.vlm import VLMTask, load_warm_start
from tests.conftest import ROOT, run_tool
from zoo.errors import ConfigError

VLM_TINY = [
    "task=vlm", "data.train_images=40", "data.val_images=8", "data.test_images=8", "trainer.max_epochs=1",
    "logger=csv", "vlm.eval_batches=1",
]  # fmt: skip


@pytest.fixture
def vlm_cfg(make_cfg, tmp_path):
    def factory(*overrides: str, name: str = "run"):
        return make_cfg(*VLM_TINY, f"data.root={tmp_path / 'vqa'}", *overrides, tiny=False, name=name)

    return factory


def test_a_run_writes_accuracy_per_question_type(vlm_cfg, tmp_path):
    metrics = train(vlm_cfg(name="run"))
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for key in ("test/acc", *(f"test/acc_{t}" for t in QUESTION_TYPES)):
        if key != "test/acc" and key not in saved:
            continue  # one generation batch of 16 questions need not hold every type
        assert 0.0 <= saved[key] <= 1.0, key
    assert "test/acc" in saved and metrics["val/loss"] == metrics["val/loss"]  # finite
    # tools/generate.py answers about an image from the run's checkpoint (tiles → features → the engine's prefill)
    from tasks.app.entry_points import generate

    image = str(sorted((tmp_path / "vqa").rglob("*.png"))[0])
    ckpt = str(tmp_path / "run" / "checkpoints" / "last.ckpt")
    args = [ckpt, "--image", image, "--prompt", "How many objects are there?", "--temperature", "0"]
    texts = generate([*args, "--max-new-tokens", "4", "--num-samples", "2"])
    assert len(texts) == 2 and texts[0] == texts[1] and len(texts[0]) <= 4
    with pytest.raises(SystemExit):
        generate([ckpt, "--image", str(tmp_path / "missing.png"), "--prompt", "?"])


def test_stages_choose_what_learns(vlm_cfg):
    align, _, _ = build(vlm_cfg("vlm.stage=align", name="align"))
    assert not any(p.requires_grad for p in align.model.language_parameters())
    assert all(p.requires_grad for p in align.model.vision_parameters() + align.model.projector_parameters())
    frozen_vit, _, _ = build(vlm_cfg("vlm.stage=align", "vlm.train_vision=false", name="align2"))
    assert not any(p.requires_grad for p in frozen_vit.model.vision_parameters())
    instruct, _, _ = build(vlm_cfg(name="instruct"))
    assert all(p.requires_grad for p in instruct.model.parameters())
    trainable = {id(p) for g in align.optimizer_param_groups() for p in g["params"]}
    assert trainable == {id(p) for p in align.model.parameters() if p.requires_grad}
    with pytest.raises(ConfigError, match=r"vlm\.stage='pretrain' is not a stage; valid choices: align, instruct"):
        VLMTask(config=dict(align.hparams.config), stage="pretrain")


def test_warm_start_loads_a_language_model_or_a_whole_vlm(vlm_cfg, tmp_path):
    task, _, _ = build(vlm_cfg(name="a"))
    lm_ckpt, vlm_ckpt = tmp_path / "lm.ckpt", tmp_path / "vlm.ckpt"
    lm_state = {f"model.{k}": torch.randn_like(v) for k, v in task.model.language_model.state_dict().items()}
    torch.save({"state_dict": lm_state}, lm_ckpt)
    assert load_warm_start(task.model, str(lm_ckpt)) == "lm"
    for key, value in task.model.language_model.state_dict().items():
        assert torch.equal(value, lm_state[f"model.{key}"]), key
    other, _, _ = build(vlm_cfg("seed=5", name="b"))
    torch.save({"state_dict": {f"model.{k}": v for k, v in other.model.state_dict().items()}}, vlm_ckpt)
    assert load_warm_start(task.model, str(vlm_ckpt)) == "vlm"
    for key, value in task.model.state_dict().items():
        assert torch.equal(value, other.model.state_dict()[key]), key
    torch.save({"state_dict": {"encoder.weight": torch.zeros(2)}}, tmp_path / "bad.ckpt")
    with pytest.raises(ConfigError, match="holds no model weights"):
        load_warm_start(task.model, str(tmp_path / "bad.ckpt"))


def test_answers_are_the_greedy_continuations_with_the_images(vlm_cfg):
    """The engine's answer (image features in its prefill) starts with the argmax of the full forward over the
    prompt and its images; blank images change the answers' log-probabilities."""
    task, datamodule, _ = build(vlm_cfg("data.describe_first=false", name="answers"))
    datamodule.setup("validate")
    batch = next(iter(datamodule.generation_dataloader("val")))
    task.eval()
    answers = task.answer(batch)
    assert len(answers) == len(batch["prompts"])
    first = torch.tensor(batch["prompts"][0])[None]
    images = batch["images_per_sample"][0].item()
    tiles = int(sum(1 + r * c if r else 1 for r, c in batch["image_grids"][:images].tolist()))
    with torch.no_grad():
        logits = task.model(
            first, pixel_values=batch["pixel_values"][:tiles], image_grids=batch["image_grids"][:images]
        )
    expected = int(logits[0, -1].argmax())
    from tasks.data.tokenizer import ByteTokenizer

    assert answers[0][:1] == ByteTokenizer().decode([expected])[:1] or expected == ByteTokenizer().eos_id


def test_describe_first_answers_after_the_models_own_description(vlm_cfg):
    """``data.describe_first``: the answer is generated after the prompt, the description the model generated
    for it, its eos and the question; the descriptions get ``vlm.describe_tokens``."""
    task, datamodule, _ = build(vlm_cfg("data.describe_first=true", "vlm.describe_tokens=5", name="described"))
    datamodule.setup("validate")
    batch = next(iter(datamodule.generation_dataloader("val")))
    calls = []
    original = task._continue

    def spy(prompts, pixels, grids, budget):
        out = original(prompts, pixels, grids, budget)
        calls.append((prompts, budget, out))
        return out

    task._continue = spy
    answers = task.answer(batch)
    (first, budget1, said), (second, budget2, out) = calls
    assert first == batch["prompts"] and (budget1, budget2) == (5, task.hparams.max_new_tokens)
    eos = task.eos_id
    for prompt, description, followup, full in zip(first, said, batch["followups"], second, strict=True):
        assert len(description) <= 5
        assert full == [*prompt, *(t for t in description if t != eos), eos, *followup]
    from tasks.data.tokenizer import ByteTokenizer

    assert answers == [ByteTokenizer().decode(tokens) for tokens in out]


@pytest.mark.slow
def test_vlm_trains_under_fsdp2_on_two_processes(tmp_path):
    """strategy=fsdp2 on 2 CPU ranks (gloo): the VLM's vision blocks and LM blocks sharded, a run that finishes and
    scores its test split."""
    result = run_tool(
        str(ROOT / "tools" / "train.py"), *VLM_TINY, f"data.root={tmp_path / 'vqa'}", "strategy=fsdp2",
        "trainer=cpu", "trainer.devices=2", f"hydra.run.dir={tmp_path / 'fsdp'}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    metrics = json.loads((tmp_path / "fsdp" / "metrics.json").read_text())
    assert 0.0 <= metrics["test/acc"] <= 1.0
    sharded = tmp_path / "fsdp" / "checkpoints" / "last.ckpt"
    assert sharded.is_dir() and len(list(sharded.glob("*.distcp"))) == 2


def test_the_diagnostic_tool_probes_the_tower_and_couples_it(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("vlm_diagnose", ROOT / "tools" / "vlm_diagnose.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    data = [f"data.root={tmp_path / 'vqa'}", "data.train_images=16", "data.val_images=4", "data.test_images=4"]
    tower, threads = tmp_path / "tower.pt", str(torch.get_num_threads())
    probed = tool.main(["probe", "--seconds", "0.5", "--save", str(tower), "--threads", threads, "--", *data])
    assert probed["steps"] >= 1 and 0.0 <= probed["val_count_acc"] <= 1.0 and 0.0 < probed["majority"] <= 1.0
    named = tool.main(["probe", "--target", "names", "--seconds", "0.5", "--threads", threads, "--", *data])
    assert named["steps"] >= 1 and all(0.0 <= a <= 1.0 for a in named["val_auroc"].values() if a == a)
    assert set(named["val_auroc"]) == set(NAMES.values())
    args = ["--seconds", "0.5", "--tower", str(tower), "--eval-batches", "1", "--threads", threads]
    coupled = tool.main(["couple", *args, "--", *data])
    assert coupled["steps"] >= 1 and coupled["val_loss"] > 0 and coupled["val_loss_blank"] > 0
    assert set(coupled["acc"]) == set(coupled["acc_blank"]) and set(coupled["acc"]) <= {*QUESTION_TYPES}
    assert tool.answer_spans([-100, 5, 6, -100, -100, 7, -100]) == [[1, 2], [5]]
    task, _, _ = tool.build(data)
    checkpoint = tmp_path / "model.ckpt"
    torch.save({"state_dict": task.state_dict()}, checkpoint)
    args = ["--checkpoint", str(checkpoint), "--records", "3", "--captions", "2", "--threads", threads]
    taught = tool.main(["teacher", *args, "--", *data])
    assert (
        set(taught["teacher_forced"]) == set(taught["teacher_forced_blank"]) and "caption" in taught["teacher_forced"]
    )
    assert all(0.0 <= v <= 1.0 for v in taught["teacher_forced"].values()) and len(taught["captions"]) == 2
    assert all(c["truth"].startswith("a") and isinstance(c["generated"], str) for c in taught["captions"])
    with pytest.raises(SystemExit):
        tool.main(["teacher", "--", *data])  # no checkpoint
    with pytest.raises(SystemExit):
        tool.main(["inspect"])
