#!/usr/bin/env python
"""Where a ``task=vlm`` model fails to use its images: two time-boxed experiments on the training data of a config.

``probe``: the vision tower and projector alone, trained for ``--seconds`` to predict from the mean of an image's
tokens through one linear layer either its object count (``--target count``: the ``How many objects are there?``
answer of its record; prints the held-out accuracy against the majority answer) or the object names of its caption
(``--target names``: one binary label per name, on the caption records; prints the held-out AUROC per name). It
bounds what the tower can learn from the data in the time, without a language model in the way. ``--save`` keeps
the tower and projector.

``couple``: the whole model trained on the config's training records for ``--seconds`` (AdamW at ``model.optim.lr``,
cosine to 0.1×), optionally from a probed tower (``--tower``) and with the language model frozen for the first
``--freeze-language`` seconds; prints the validation loss with the real images and with every image blank, and the
greedy answers' exact match per question type both ways (first ``--eval-batches`` generation batches).

    python tools/vlm_diagnose.py probe --seconds 60 --save tower.pt -- data.background=flat
    python tools/vlm_diagnose.py couple --seconds 150 --tower tower.pt -- data.background=flat
    python tools/vlm_diagnose.py probe --target names --seconds 200 --save names.pt -- model=vlm_tiny_convnet

``teacher``: a trained checkpoint (``--checkpoint``, with the overrides it was trained with) scored per answer type
with the true conversation before each answer (teacher forcing: every token of the answer the argmax), with the
real and with blank images, and its own greedy captions of a few validation images: whether a failure is in the
language model's use of its context or in what the image tokens carry.

    python tools/vlm_diagnose.py teacher --checkpoint logs/vlm/runs/<time>/checkpoints/last.ckpt -- seed=1

Overrides after ``--`` are Hydra overrides of ``task=vlm``. Single process, CPU or one GPU.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from zoo.vision_language import image_token_count

COUNT = re.compile(rb"How many objects are there\?\nASSISTANT: (\d+)")
CAPTION = re.compile(rb"Describe the image\.\nASSISTANT: ([^\n]*)")


def build(overrides: list[str]):
    """The task and datamodule of ``task=vlm`` with ``overrides`` (set up), built as the runner does."""
    from omegaconf import OmegaConf

    from tasks.app.entry_points import _compose
    from tasks.app.runner import task_kwargs
    from zoo.registries import DATA, TASK

    cfg = _compose(["task=vlm", *overrides], [])
    plain = {key: OmegaConf.to_container(cfg[key], resolve=True) for key in ("task", "model", "vlm", "data")}
    data = dict(plain["data"])
    datamodule = DATA.get(data.pop("name"))(**data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return TASK.get(plain["task"]["name"])(**task_kwargs(plain)), datamodule, plain


def count_of(sample: dict) -> int | None:
    """The count answer in a training sample's tokens (None when it asks none)."""
    match = COUNT.search(bytes(t for t in sample["input_ids"] if t < 256))
    return int(match.group(1)) if match else None


def names_of(sample: dict, names: list[str]) -> torch.Tensor | None:
    """``float [len(names)]``: which names a caption sample's answer lists (None when it is no caption)."""
    match = CAPTION.search(bytes(t for t in sample["input_ids"] if t < 256))
    if match is None:
        return None
    listed = {item.split()[-1] for item in match.group(1).decode().split(", ") if item}
    return torch.tensor([float(name in listed) for name in names])


def probe(args: argparse.Namespace) -> dict:
    if args.target == "names":
        return probe_names(args)
    task, datamodule, plain = build(args.overrides)
    model = task.model
    train, val = datamodule.sets["train"], datamodule.sets["val"]
    train_ids = [i for i in range(len(train)) if count_of(train.sample(i)) is not None]
    val_ids = [i for i in range(len(val)) if count_of(val.sample(i)) is not None][:256]
    head = torch.nn.Linear(plain["model"]["config"]["language_model"]["config"]["hidden_size"], 16)
    params = [*model.vision_parameters(), *model.projector_parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=args.lr)

    def logits_and_counts(dataset, ids):
        samples = [dataset.sample(i) for i in ids]
        pixels = torch.cat([s["tiles"] for s in samples])
        grids = torch.tensor([g for s in samples for g in s["grids"]]).reshape(-1, 2)
        features = model.encode_images(pixels, grids)
        tokens = [sum(image_token_count(tuple(g), model.patches_per_tile) for g in s["grids"]) for s in samples]
        pooled = torch.stack([f.mean(0) for f in features.split(tokens)])
        return head(pooled), torch.tensor([count_of(s) for s in samples])

    rng, start, steps = np.random.default_rng(0), time.time(), 0
    while time.time() - start < args.seconds:
        logits, counts = logits_and_counts(train, rng.choice(train_ids, args.batch, replace=False).tolist())
        loss = torch.nn.functional.cross_entropy(logits, counts)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        steps += 1
    with torch.no_grad():
        model.eval()
        logits, counts = logits_and_counts(val, val_ids)
    result = {
        "steps": steps,
        "val_count_acc": float((logits.argmax(-1) == counts).float().mean()),
        "majority": float(np.bincount(counts.numpy()).max() / len(counts)),
    }
    if args.save:
        torch.save({"vision_tower": model.vision_tower.state_dict(),
                    "projector": model.multi_modal_projector.state_dict()}, args.save)  # fmt: skip
    print(result)
    return result


def probe_names(args: argparse.Namespace) -> dict:
    from torchmetrics.functional.classification import multilabel_auroc

    from tasks.data.vlm.copy_paste_vqa import NAMES

    task, datamodule, plain = build([*args.overrides, "vlm.stage=align"])
    names = sorted(datamodule.categories or set(NAMES.values()))
    model = task.model
    train, val = datamodule.sets["train"], datamodule.sets["val"]
    head = torch.nn.Linear(plain["model"]["config"]["language_model"]["config"]["hidden_size"], len(names))
    params = [*model.vision_parameters(), *model.projector_parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.05)
    cache: dict[tuple[int, int], dict] = {}

    def logits_and_labels(dataset, ids):
        samples = [cache.setdefault((id(dataset), i), dataset.sample(i)) for i in ids]
        pixels = torch.cat([s["tiles"] for s in samples])
        grids = torch.tensor([g for s in samples for g in s["grids"]]).reshape(-1, 2)
        features = model.encode_images(pixels, grids)
        tokens = [sum(image_token_count(tuple(g), model.patches_per_tile) for g in s["grids"]) for s in samples]
        pooled = torch.stack([f.mean(0) for f in features.split(tokens)])
        return head(pooled), torch.stack([names_of(s, names) for s in samples])

    rng, start, steps = np.random.default_rng(0), time.time(), 0
    while time.time() - start < args.seconds:
        logits, labels = logits_and_labels(train, rng.choice(len(train), args.batch, replace=False).tolist())
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        steps += 1
    with torch.no_grad():
        model.eval()
        logits, labels = logits_and_labels(val, list(range(min(len(val), 256))))
        seen_logits, seen_labels = logits_and_labels(train, list(range(min(len(train), 256))))
    auroc = multilabel_auroc(logits, labels.long(), num_labels=len(names), average="none")
    seen = multilabel_auroc(seen_logits, seen_labels.long(), num_labels=len(names), average="macro")
    result = {"steps": steps, "val_auroc": {n: round(float(a), 3) for n, a in zip(names, auroc, strict=True)},
              "val_auroc_mean": round(float(auroc.mean()), 3), "train_auroc_mean": round(float(seen), 3)}  # fmt: skip
    if args.save:
        torch.save({"vision_tower": model.vision_tower.state_dict(),
                    "projector": model.multi_modal_projector.state_dict()}, args.save)  # fmt: skip
    print(result)
    return result


def couple(args: argparse.Namespace) -> dict:
    from tasks.data.vlm import normalize_answer

    task, datamodule, plain = build(args.overrides)
    _, blind, _ = build([*args.overrides, "vlm.blind=true"])
    if args.tower:
        state = torch.load(args.tower)
        task.model.vision_tower.load_state_dict(state["vision_tower"])
        task.model.multi_modal_projector.load_state_dict(state["projector"])
    lr = float(plain["model"]["optim"]["lr"])
    params = [p for p in task.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.05, betas=(0.9, 0.95))
    language = list(task.model.language_parameters())
    captions = build([*args.overrides, "vlm.stage=align"])[1] if args.align_seconds > 0 else None
    total = args.align_seconds + args.seconds
    start, steps = time.time(), 0
    while time.time() - start < total:
        aligning = captions is not None and time.time() - start < args.align_seconds
        for batch in (captions if aligning else datamodule).train_dataloader():
            elapsed = time.time() - start
            frozen = elapsed < args.freeze_language
            for p in language:
                p.requires_grad_(not frozen)
            ce, aux = task._loss(batch)
            loss = ce if aux is None or frozen else ce + aux
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            for group in optimizer.param_groups:
                group["lr"] = lr * (0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, elapsed / total))))
            optimizer.step()
            steps += 1
            if time.time() - start >= total or aligning != (time.time() - start < args.align_seconds):
                break
    task.eval()

    @torch.no_grad()
    def val_loss(dm) -> float:
        total = tokens = 0
        for batch in dm.val_dataloader():
            ce, _ = task._loss(batch)
            n = int((batch["labels"] != -100).sum())
            total, tokens = total + float(ce) * n, tokens + n
        return total / tokens

    def accuracy(dm) -> dict[str, float]:
        hits = collections.defaultdict(list)
        for index, batch in enumerate(dm.generation_dataloader("val")):
            if index >= args.eval_batches:
                break
            for answer, truth, kind in zip(task.answer(batch), batch["answers"], batch["types"], strict=True):
                hits[kind].append(normalize_answer(answer) == normalize_answer(truth))
        return {kind: round(float(np.mean(v)), 3) for kind, v in sorted(hits.items())}

    result = {"steps": steps, "val_loss": val_loss(datamodule), "val_loss_blank": val_loss(blind),
              "acc": accuracy(datamodule), "acc_blank": accuracy(blind)}  # fmt: skip
    print(result)
    return result


def answer_spans(labels: list[int]) -> list[list[int]]:
    """The positions of each answer turn of a sample (consecutive runs of ``labels`` that are not ignored)."""
    spans: list[list[int]] = []
    for position, label in enumerate(labels):
        if label == -100:
            continue
        if spans and spans[-1][-1] == position - 1:
            spans[-1].append(position)
        else:
            spans.append([position])
    return spans


def teacher(args: argparse.Namespace) -> dict:
    """Per answer type, the share of validation answers whose every token (and eos) is the model's argmax with the
    true conversation before it (teacher forcing: the true caption in context), with the real and with blank
    images; and the model's own greedy captions of the first ``--captions`` validation images."""
    from tasks.data.tokenizer import ByteTokenizer

    task, datamodule, _ = build(args.overrides)
    _, blind, _ = build([*args.overrides, "vlm.blind=true"])
    task.load_state_dict(torch.load(args.checkpoint, map_location="cpu", weights_only=False)["state_dict"])
    task.eval()
    result: dict = {}
    with torch.no_grad():
        for name, dm in (("teacher_forced", datamodule), ("teacher_forced_blank", blind)):
            val, hits = dm.sets["val"], collections.defaultdict(list)
            for i in range(min(len(val), args.records)):
                sample, kinds = val.sample(i), val.records[i].get("type", "other")
                kinds = kinds if isinstance(kinds, list) else [kinds]
                logits = task.model(torch.tensor(sample["input_ids"])[None], pixel_values=sample["tiles"],
                                    image_grids=torch.tensor(sample["grids"]))[0]  # fmt: skip
                predicted, labels = logits.argmax(-1), torch.tensor(sample["labels"])
                for kind, span in zip(kinds, answer_spans(sample["labels"]), strict=False):
                    hits[kind].append(bool((predicted[span] == labels[span]).all()))
            result[name] = {kind: round(float(np.mean(v)), 3) for kind, v in sorted(hits.items())}
        val, tokenizer, captions = datamodule.sets["val"], ByteTokenizer(), []
        for i in range(min(len(val), args.captions)):
            sample = val.sample(i)
            span = answer_spans(sample["labels"])[0]  # the first answer (the caption of a described dialog)
            prompt = sample["input_ids"][: span[0] + 1]
            said = task._continue([prompt], sample["tiles"], torch.tensor(sample["grids"]), 64)[0]
            truth = [sample["labels"][p] for p in span]  # its tokens and eos
            captions.append({"truth": tokenizer.decode(truth), "generated": tokenizer.decode(said)})
        result["captions"] = captions
    print(json.dumps(result, indent=1))
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], usage="%(prog)s {probe,couple,teacher} [options] -- [overrides]"
    )
    parser.add_argument("mode", choices=("probe", "couple", "teacher"))
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--target", choices=("count", "names"), default="count", help="probe: what is predicted")
    parser.add_argument("--lr", type=float, default=3e-3, help="probe: AdamW learning rate")
    parser.add_argument("--batch", type=int, default=16, help="probe: images per step")
    parser.add_argument("--save", help="probe: write the trained tower and projector here")
    parser.add_argument("--tower", help="couple: start from a probed tower and projector")
    parser.add_argument(
        "--align-seconds",
        type=float,
        default=0.0,
        help="couple: seconds on the caption records (every weight learning) before --seconds",
    )
    parser.add_argument("--freeze-language", type=float, default=0.0, help="couple: seconds with the LM frozen")
    parser.add_argument("--eval-batches", type=int, default=6, help="couple: generation batches scored")
    parser.add_argument("--checkpoint", help="teacher: the task=vlm checkpoint to read")
    parser.add_argument("--records", type=int, default=150, help="teacher: validation records scored")
    parser.add_argument("--captions", type=int, default=6, help="teacher: greedy captions shown")
    parser.add_argument("--threads", type=int, default=2)
    argv = sys.argv[1:] if argv is None else list(argv)
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    args.overrides = argv[split + 1 :]  # Hydra overrides of task=vlm
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.mode == "teacher" and not args.checkpoint:
        parser.error("teacher needs --checkpoint")
    return {"probe": probe, "couple": couple, "teacher": teacher}[args.mode](args)


if __name__ == "__main__":
    main()
