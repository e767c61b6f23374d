"""Vision-language data: the copy-paste VQA generator, conversation tokenising, tiled batches, checks at setup."""

from __future__ import annotations

import hashlib
import inspect
import itertools
import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from tasks.data.text.packing import IGNORE_INDEX
from tasks.data.tokenizer import ByteTokenizer
from tasks.data.vlm import (
    BLANK,
    NAMES,
    QUESTION_TYPES,
    CopyPasteVQADataModule,
    LlavaDataModule,
    RecordImageTooLargeError,
    RowSampler,
    copy_paste_vqa,
    encode_conversation,
    encode_described_prompt,
    encode_prompt,
    normalize_answer,
)
from tasks.data.vlm.copy_paste_vqa import QUARTERS, generate, split_paths
from zoo.errors import ConfigError, DatasetNotFoundError
from zoo.registries import DATA
from zoo.vision_language.tiling import ImageTooLargeError, Tiling

CONF_DATA = Path(__file__).resolve().parents[2] / "conf" / "data"
COUNTS = {"train": 20, "val": 10, "test": 10}
TOKENIZER = ByteTokenizer()


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("copy_paste_vqa")
    generate(out, COUNTS["train"], COUNTS["val"], COUNTS["test"], size=64, seed=0)
    return out


def small_module(root: Path, **kwargs) -> CopyPasteVQADataModule:
    counts = {f"{s}_images": n for s, n in COUNTS.items()}
    dm = CopyPasteVQADataModule(root=str(root), **counts, **kwargs)
    dm.setup()
    return dm


def records(root: Path, split: str, kind: str) -> list[dict]:
    return json.loads(split_paths(root, split)[kind].read_text())


def answer(record: dict) -> str:
    return record["conversations"][-1]["value"]


# ----------------------------------------------------------------------------------------------- generator
def test_generator_is_deterministic_by_seed(generated, tmp_path):
    generate(tmp_path / "same", COUNTS["train"], COUNTS["val"], COUNTS["test"], size=64, seed=0)
    generate(tmp_path / "other", 4, 2, 2, size=64, seed=1)
    for split in COUNTS:
        for kind, path in split_paths(generated, split).items():
            assert (tmp_path / "same" / path.name).read_bytes() == path.read_bytes(), (split, kind)
        assert (tmp_path / "same" / split / "000003.png").read_bytes() == (
            generated / split / "000003.png"
        ).read_bytes()
        other = (tmp_path / "other" / split / "000001.png").read_bytes()
        assert other != (generated / split / "000001.png").read_bytes()


def test_splits_are_disjoint_and_val_test_paste_held_out_objects(generated, tmp_path, monkeypatch):
    digests = {
        split: {hashlib.sha256((generated / split / f"{i:06d}.png").read_bytes()).hexdigest() for i in range(1, n + 1)}
        for split, n in COUNTS.items()
    }
    assert not digests["train"] & digests["val"] and not digests["val"] & digests["test"]
    ids = [r["id"] for s in COUNTS for kind in ("captions", "vqa") for r in records(generated, s, kind)]
    assert len(ids) == len(set(ids))
    banks = []
    real_bank = copy_paste_vqa.ObjectBank
    monkeypatch.setattr(copy_paste_vqa, "ObjectBank", lambda split, **kw: banks.append(split) or real_bank(split, **kw))
    generate(tmp_path / "x", 1, 1, 1, size=64, seed=0)
    assert banks == ["val", "val", "train"]  # test, val, train: val/test from the held-out bank


def test_background_and_scale_options(generated, tmp_path):
    import numpy as np

    from tasks.data import copy_paste

    bank = copy_paste_vqa.ObjectBank("train")
    for index in range(1, 4):  # overlapping "photo" scenes with copy_paste's scale range are copy_paste's scenes
        rng, ref_rng = np.random.default_rng([0, 100, index]), np.random.default_rng([0, 100, index])
        rgb, visible = copy_paste_vqa.compose(bank, rng, 64, "photo", copy_paste.SCALE, "overlap")
        ref_rgb, ref_visible = copy_paste.compose(bank, ref_rng, 64)
        assert np.array_equal(rgb, ref_rgb) and len(visible) == len(ref_visible)
    flat = tmp_path / "flat"
    copy_paste_vqa.generate_split(flat, "train", 8, seed=0, background="flat", scale=(0.2, 0.4))
    images = json.loads(split_paths(flat, "train")["objects"].read_text())["images"]
    hi = 0.4
    for image in images:  # one flat colour outside the objects
        rgb = np.asarray(Image.open(flat / image["file"]))
        covered = np.zeros(rgb.shape[:2], dtype=bool)
        for o in image["objects"]:
            x, y, w, h = o["bbox"]
            covered[max(0, y - 1) : y + h + 1, max(0, x - 1) : x + w + 1] = True
            assert o["small"] or max(w, h) <= int(64 * hi)
        _, share = np.unique(rgb[~covered].reshape(-1, 3), axis=0, return_counts=True)
        assert share.max() >= 0.5 * share.sum(), image["file"]  # (remnants of dropped, occluded objects aside)
    a = copy_paste_vqa.generate_split(tmp_path / "a", "val", 2, seed=0, background="photo", scale=(0.3, 0.3))
    assert json.loads(a["objects"].read_text())["info"]["background"] == "photo"
    for kwargs in ({"background": "sky"}, {"scale": (0.5, 0.2)}, {"scale": (0.0, 0.5)}, {"scale": "big"},
                   {"layout": "grid"}, {"max_objects": 0}):  # fmt: skip
        with pytest.raises(ConfigError, match=next(iter(kwargs))):
            copy_paste_vqa.generate_split(tmp_path / "b", "val", 1, **kwargs)
    base = copy_paste_vqa.settings(1, 1, 1, 64, 0)
    assert base != copy_paste_vqa.settings(1, 1, 1, 64, 0, background="flat")
    assert base != copy_paste_vqa.settings(1, 1, 1, 64, 0, scale=(0.2, 0.5))
    assert base != copy_paste_vqa.settings(1, 1, 1, 64, 0, layout="overlap")
    assert base != copy_paste_vqa.settings(1, 1, 1, 64, 0, max_objects=3)


def test_categories_and_heldout_objects_options(tmp_path, monkeypatch):
    chosen = ["trouser", "bag", "face"]
    paths = copy_paste_vqa.generate_split(tmp_path / "a", "val", 12, seed=0, categories=chosen)
    info = json.loads(paths["objects"].read_text())
    assert info["info"]["categories"] == sorted(chosen, key=list(NAMES.values()).index)
    pasted = {o["name"] for image in info["images"] for o in image["objects"]}
    assert pasted and pasted <= set(chosen)
    asked = [r["conversations"][0]["value"] for r in json.loads(paths["vqa"].read_text()) if r["type"] == "presence"]
    assert asked and all(q.split()[-1].rstrip("?") in chosen for q in asked)  # absent names come from the list too
    banks = []
    real_bank = copy_paste_vqa.ObjectBank
    monkeypatch.setattr(copy_paste_vqa, "ObjectBank", lambda split, **kw: banks.append(split) or real_bank(split, **kw))
    generate(tmp_path / "b", 1, 1, 1, size=64, seed=0, heldout_objects=False)
    assert banks == ["train", "train", "train"]  # seen objects in new scenes
    for bad, match in ((["trouser", "cat"], r"unknown name\(s\) \['cat'\].*valid names: \['animal'"),
                       ("bag", "non-empty list"), ([], "non-empty list"), (["bag", "bag"], "twice")):  # fmt: skip
        with pytest.raises(ConfigError, match=match):
            copy_paste_vqa.generate_split(tmp_path / "c", "val", 1, categories=bad)
    with pytest.raises(ConfigError, match=r"data\.categories: unknown"):
        CopyPasteVQADataModule(categories=["cat"])
    base = copy_paste_vqa.settings(1, 1, 1, 64, 0)
    assert base == copy_paste_vqa.settings(1, 1, 1, 64, 0, categories=None, heldout_objects=True)
    assert base != copy_paste_vqa.settings(1, 1, 1, 64, 0, categories=["bag"])
    assert base != copy_paste_vqa.settings(1, 1, 1, 64, 0, heldout_objects=False)


def test_category_tint_gives_each_garment_class_its_hue():
    import numpy as np

    from tasks.data import copy_paste

    def hues(tint: str) -> dict[int, list[float]]:
        bank, rng, out = copy_paste.ObjectBank("val", tint=tint), np.random.default_rng(0), {}
        bank.category_ids = [1, 4, 8]  # top, dress, bag
        for _ in range(30):
            category, sprite = bank.sample(rng, 20)
            hsv = np.asarray(Image.fromarray(sprite.rgb).convert("HSV"), dtype=np.float64)[sprite.mask]
            bright = hsv[hsv[:, 2] > 60]  # hue is defined where the pixel is not near black
            angle = np.angle(np.exp(2j * np.pi * bright[:, 0] / 255).mean()) / (2 * np.pi) % 1.0  # circular mean
            out.setdefault(category, []).append(float(angle))
        return out

    def spread(values: list[float]) -> float:  # circular distance of the farthest value from the first
        return max(min(abs(v - values[0]), 1 - abs(v - values[0])) for v in values)

    keyed, free = hues("category"), hues("random")
    for category, values in keyed.items():
        centre = (category - 1) / 10
        assert spread(values) < 0.08 and min(abs(values[0] - centre), 1 - abs(values[0] - centre)) < 0.06
    assert max(spread(v) for v in free.values()) > 0.25  # random tints vary
    with pytest.raises(ConfigError, match=r"tint='plaid'.*random, category"):
        copy_paste_vqa.generate_split(Path("/nonexistent"), "val", 1, tint="plaid")
    with pytest.raises(ConfigError, match=r"data\.tint='plaid'"):
        CopyPasteVQADataModule(tint="plaid")
    assert copy_paste_vqa.settings(1, 1, 1, 64, 0) != copy_paste_vqa.settings(1, 1, 1, 64, 0, tint="category")


def test_several_presence_questions_per_image(tmp_path):
    one = copy_paste_vqa.generate_split(tmp_path / "one", "val", 10, seed=0)
    three = copy_paste_vqa.generate_split(tmp_path / "three", "val", 10, seed=0, presence_questions=3)
    objects = {i["file"]: {o["name"] for o in i["objects"]} for i in json.loads(three["objects"].read_text())["images"]}
    records = json.loads(three["vqa"].read_text())
    assert len({r["id"] for r in records}) == len(records)
    by_image: dict[str, list[tuple[str, str]]] = {}
    for r in records:
        if r["type"] == "presence":
            name = r["conversations"][0]["value"].rsplit(" ", 1)[-1].rstrip("?")
            by_image.setdefault(r["image"], []).append((name, answer(r)))
    for image, asked in by_image.items():
        assert 1 <= len(asked) <= 3 and len({n for n, _ in asked}) == len(asked)  # distinct names
        assert all((n in objects[image]) == (a == "yes") for n, a in asked)  # answers follow the annotations
    assert sum(len(a) for a in by_image.values()) > 2 * len(by_image)
    firsts = [r for r in records if r["type"] != "presence" or not r["id"][-1].isdigit()]
    assert [r["conversations"] for r in firsts] == [r["conversations"] for r in json.loads(one["vqa"].read_text())]
    with pytest.raises(ConfigError, match="presence_questions"):
        copy_paste_vqa.generate_split(tmp_path / "bad", "val", 1, presence_questions=0)


def test_scattered_scenes_keep_every_object_whole_and_apart(tmp_path):
    import numpy as np

    out = copy_paste_vqa.generate_split(tmp_path, "train", 24, seed=3, max_objects=4)
    images = json.loads(out["objects"].read_text())["images"]
    counts = []
    for image in images:
        big = [o for o in image["objects"] if not o["small"]]
        counts.append(len(big))
        assert 1 <= len(big) <= 4, image["file"]
        grown = []  # no two boxes of the scene's objects within 1 px (the small one keeps its gap to masks)
        for o in big:
            x, y, w, h = o["bbox"]
            box = np.zeros((64, 64), dtype=bool)
            box[max(0, y) : y + h, max(0, x) : x + w] = True
            grown.append(box)
            assert max(w, h) <= int(64 * copy_paste_vqa.SCALE[1]), image["file"]
        for i, a in enumerate(grown):
            for b in grown[i + 1 :]:
                gap = np.zeros_like(b)
                ys, xs = np.nonzero(b)
                gap[max(0, ys.min() - 1) : ys.max() + 2, max(0, xs.min() - 1) : xs.max() + 2] = True
                assert not (a & gap).any(), image["file"]
    assert len(set(counts)) >= 3  # the count varies


def test_answers_follow_the_annotations(generated):
    size = 64
    for split, n in COUNTS.items():
        images = json.loads(split_paths(generated, split)["objects"].read_text())["images"]
        assert len(images) == n
        vqa = records(generated, split, "vqa")
        assert {r["type"] for r in vqa} == set(QUESTION_TYPES), split
        by_image: dict[str, dict[str, dict]] = {}
        for r in vqa:
            assert r["conversations"][0]["value"].startswith("<image>\n")
            by_image.setdefault(r["image"], {})[r["type"]] = r
        presence = [answer(q["presence"]) for q in by_image.values()]
        assert presence.count("yes") == presence.count("no") == n // 2  # balanced by construction
        for image in images:
            objects, questions = image["objects"], by_image[image["file"]]
            names = [o["name"] for o in objects]
            assert set(names) <= set(NAMES.values())
            assert answer(questions["count"]) == str(len(objects))
            asked = questions["presence"]["conversations"][0]["value"].split()[-1].rstrip("?")
            assert answer(questions["presence"]) == ("yes" if asked in names else "no")
            xs = sorted(objects, key=lambda o: o["bbox"][0])
            if "leftmost" in questions:
                assert answer(questions["leftmost"]) == xs[0]["name"]
                assert len(xs) == 1 or xs[1]["bbox"][0] - xs[0]["bbox"][0] >= copy_paste_vqa.gap(size)
            else:
                assert xs[1]["bbox"][0] - xs[0]["bbox"][0] < copy_paste_vqa.gap(size)
            if "quadrant" in questions:
                quarter = QUARTERS.index(questions["quadrant"]["conversations"][0]["value"].split()[5])
                inside = [
                    o["name"]
                    for o in objects
                    if (o["bbox"][0] + o["bbox"][2] / 2 >= size / 2) == bool(quarter % 2)
                    and (o["bbox"][1] + o["bbox"][3] / 2 >= size / 2) == bool(quarter // 2)
                ]
                assert len(inside) <= 1 and answer(questions["quadrant"]) == (inside[0] if inside else "nothing")
            small = [o for o in objects if o["small"]]
            assert len(small) <= 1 and ("detail" in questions) == bool(small)
            if small:
                assert answer(questions["detail"]) == small[0]["name"]
                assert max(small[0]["bbox"][2:]) <= max(copy_paste_vqa.DETAIL_MIN, round(0.09 * size))
        captions = {r["image"]: answer(r) for r in records(generated, split, "captions")}
        first = images[0]["objects"]
        assert captions[images[0]["file"]] == copy_paste_vqa.caption(first)
        assert len(captions[images[0]["file"]].split(", ")) == len(first)


# ----------------------------------------------------------------------------------------------- tokenising
def record(rid: str, images: list[str], turns: list[tuple[str, str]]) -> dict:
    return {"id": rid, "image": images, "conversations": [{"from": f, "value": v} for f, v in turns]}


def runs(ids: list[int], token: int) -> list[int]:
    """Lengths of the runs of ``token`` in ``ids``, in order."""
    out, n = [], 0
    for t in [*ids, -1]:
        if t == token:
            n += 1
        elif n:
            out, n = [*out, n], 0
    return out


def test_labels_cover_exactly_the_answers_and_their_eos():
    r = record("r", [], [("human", "Hi?"), ("gpt", "yes."), ("human", "And?"), ("gpt", "no")])
    ids, labels = encode_conversation(r, [], TOKENIZER, 257)
    assert len(ids) == len(labels) and labels[-1] == IGNORE_INDEX
    assert TOKENIZER.decode(ids) == "USER: Hi?\nASSISTANT: yes.\nUSER: And?\nASSISTANT: no\n"
    kept = [t for t in range(len(ids)) if labels[t] != IGNORE_INDEX]
    assert all(labels[t] == ids[t + 1] for t in kept)
    assert [labels[t] for t in kept] == [*b"yes.", 256, *b"no", 256]
    prompt, expected = encode_prompt(r, [], TOKENIZER, 257)
    assert TOKENIZER.decode(prompt) == "USER: Hi?\nASSISTANT: yes.\nUSER: And?\nASSISTANT: " and expected == "no"
    assert prompt == ids[: len(prompt)]
    assert normalize_answer("  Yes. ") == "yes" and normalize_answer("3") == "3"


@pytest.fixture()
def odd_images(tmp_path) -> Path:
    for name, size, colour in (("wide", (50, 20), (255, 0, 0)), ("tall", (20, 50), (0, 255, 0)), ("sq", (33, 33), 7)):
        Image.new("RGB", size, colour).save(tmp_path / f"{name}.png")
    return tmp_path


def write_json(path: Path, items: list[dict]) -> str:
    path.write_text(json.dumps(items))
    return str(path)


def test_image_runs_tiles_and_grids_follow_the_tags(odd_images):
    sizes = {"wide": (50, 20), "tall": (20, 50), "sq": (33, 33)}
    order = ["tall", "wide", "sq"]
    r = record("multi", [f"{n}.png" for n in order], [("human", "<image>\n<image>\nCompare. <image>"), ("gpt", "ok")])
    single = [record(f"one-{n}", f"{n}.png", [("human", "<image>\nWhat?"), ("gpt", n)]) for n in sizes]
    train = write_json(odd_images / "train.json", [r, *single])
    dm = LlavaDataModule(train_json=train, val_json=train, image_folder=str(odd_images), tile_size=8, max_tiles=9,
                         patch_size=4, pack=False, batch_size=4)  # fmt: skip
    dm.setup()
    tiling = Tiling(8, 9)
    assert dm.patches_per_tile == 4
    batch = next(iter(dm.val_dataloader()))
    expected = [tiling.num_tokens(*sizes[n], 4) for n in order]
    assert len(set(expected)) == 3  # the three aspect ratios give three grids
    assert runs(batch["input_ids"][0].tolist(), 257) == expected
    for row, name in enumerate(sizes, start=1):
        assert runs(batch["input_ids"][row].tolist(), 257) == [tiling.num_tokens(*sizes[name], 4)]
    images = [Image.open(odd_images / f"{n}.png") for n in [*order, *sizes]]
    tiles = [tiling(im) for im in images]
    assert torch.equal(batch["pixel_values"], torch.cat([t for t, _ in tiles]))
    assert batch["pixel_values"].dtype == torch.uint8 and batch["pixel_values"].shape[1:] == (3, 8, 8)
    assert batch["image_grids"].tolist() == [list(g) for _, g in tiles]
    assert batch["image_grids"][:3].tolist() == [list(tiling.grid(*sizes[n])) for n in order]
    assert batch["images_per_sample"].tolist() == [3, 1, 1, 1]
    labels = batch["labels"][0]
    assert labels[labels != IGNORE_INDEX].tolist() == [*b"ok", 256]
    assert batch["num_tokens"] == int((batch["labels"] != IGNORE_INDEX).sum())
    prompts = next(iter(dm.generation_dataloader("val")))
    assert runs(prompts["prompts"][0], 257) == expected and prompts["answers"] == ["ok", "wide", "tall", "sq"]
    assert prompts["types"] == ["other"] * 4 and torch.equal(prompts["pixel_values"], batch["pixel_values"])
    fixed = LlavaDataModule(train_json=train, image_folder=str(odd_images), tile_size=8, max_tiles=9, patch_size=4,
                            dynamic=False, pack=False)  # fmt: skip
    fixed.setup()
    assert fixed.sets["train"].image_tokens[0] == [4, 4, 4]  # thumbnail only: P tokens per image


# ----------------------------------------------------------------------------------------------- batches
def samples_of(loader, pack: bool) -> list[tuple[list[int], list[int]]]:
    out = []
    for batch in loader:
        if pack:
            bounds = batch["cu_seqlens"].tolist()
            assert batch["input_ids"].shape[0] == 1 and bounds[0] == 0 and bounds[-1] == batch["input_ids"].numel()
            assert len(bounds) - 1 == len(batch["images_per_sample"])
            for a, b in itertools.pairwise(bounds):
                ids = batch["input_ids"][0, a:b].tolist()
                assert TOKENIZER.decode(ids[:6]) == "USER: "  # a boundary at every sample start
                out.append((ids, batch["labels"][0, a:b].tolist()))
        else:
            assert "cu_seqlens" not in batch
            for ids, labels in zip(batch["input_ids"].tolist(), batch["labels"].tolist(), strict=True):
                n = len(ids)
                while ids[n - 1] == TOKENIZER.eos_id:
                    n -= 1  # padding (a sample ends with "\n")
                assert set(labels[n:]) <= {IGNORE_INDEX}
                out.append((ids[:n], labels[:n]))
    return out


def test_packed_batches_hold_the_padded_batches_samples(generated):
    packed = small_module(generated, max_tokens=800)
    padded = small_module(generated, pack=False, batch_size=3)
    assert samples_of(packed.val_dataloader(), True) == samples_of(padded.val_dataloader(), False)
    assert len(packed.val_dataloader()) < len(packed.sets["val"])  # several samples per packed row
    tiles = [torch.cat([b["pixel_values"] for b in m.val_dataloader()]) for m in (packed, padded)]
    assert torch.equal(*tiles)
    first = next(iter(packed.train_dataloader()))
    assert sum(first["input_ids"].shape) - 1 <= 800 and first["cu_seqlens"].dtype == torch.int32


def test_training_rows_are_deterministic_by_seed_and_sharded(generated):
    dm = small_module(generated, max_tokens=400)
    again = small_module(generated, max_tokens=400)
    loader = dm.train_dataloader()
    rows = [r for r in loader.sampler]
    assert rows == list(again.train_dataloader().sampler)
    loader.sampler.set_epoch(1)
    assert list(loader.sampler) != rows and sorted(map(sorted, loader.sampler)) == sorted(map(sorted, rows))
    lengths = dm.sets["train"].lengths
    shards = [
        RowSampler(lengths, max_tokens=400, batch_size=16, shuffle=True, seed=0, drop_last=True, num_replicas=2, rank=r)
        for r in (0, 1)
    ]
    a, b = (list(s) for s in shards)
    assert len(a) == len(b) and not {i for r in a for i in r} & {i for r in b for i in r}


def test_blind_keeps_shapes_and_token_counts(generated):
    seeing, blind = small_module(generated, pack=False), small_module(generated, pack=False, blind=True)
    a, b = next(iter(seeing.val_dataloader())), next(iter(blind.val_dataloader()))
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["image_grids"], b["image_grids"])
    assert a["pixel_values"].shape == b["pixel_values"].shape and (b["pixel_values"] == BLANK).all()
    assert not (a["pixel_values"] == BLANK).all()


def test_multi_turn_records_hold_every_question_of_an_image(generated):
    single = records(generated, "train", "vqa")
    dialogs = records(generated, "train", "dialogs")
    assert len(dialogs) == COUNTS["train"] and len({d["image"] for d in dialogs}) == COUNTS["train"]
    for dialog in dialogs:
        own = [r for r in single if r["image"] == dialog["image"]]
        turns = dialog["conversations"]
        assert [t["from"] for t in turns] == ["human", "gpt"] * len(own) and len(dialog["type"]) == len(own)
        pairs = [(t["value"].removeprefix("<image>\n"), a["value"]) for t, a in zip(turns[::2], turns[1::2])]
        assert sorted(pairs) == sorted((r["conversations"][0]["value"][8:], answer(r)) for r in own)
        assert turns[0]["value"].startswith("<image>\n") and sum("<image>" in t["value"] for t in turns) == 1
        assert sorted(dialog["type"]) == sorted(r["type"] for r in own)
    dm = small_module(generated)
    assert {len(s) for s in dm.sets.values()} == set(COUNTS.values()) and dm.sets["train"].records == dialogs
    sample = dm.sets["train"].sample(0)
    targets = [t for t in sample["labels"] if t != IGNORE_INDEX]
    expected = [b for t in dialogs[0]["conversations"][1::2] for b in [*t["value"].encode(), TOKENIZER.eos_id]]
    assert targets == expected  # every answer turn (and its eos) is supervised, nothing else
    assert len(dm.eval_sets["test"]) == len(records(generated, "test", "vqa"))  # generation: single questions
    assert all(isinstance(r["type"], str) for r in dm.eval_sets["test"].records)
    flat = small_module(generated, multi_turn=False)
    assert flat.sets["train"].records == single


def test_described_prompts_ask_for_the_description_then_the_question():
    r = record("r", ["a.png"], [("human", "<image>\nHow many?"), ("gpt", "3")])
    prefix, followup, expected = encode_described_prompt(r, [2], TOKENIZER, 257, "Describe the image.")
    assert runs(prefix, 257) == [2] and 257 not in followup and expected == "3"
    assert TOKENIZER.decode([t for t in prefix if t != 257]) == "USER: \nDescribe the image.\nASSISTANT: "
    assert TOKENIZER.decode(followup) == "\nUSER: How many?\nASSISTANT: "
    # what the model reads at the answer = the training rendering of [describe turn, question turn]
    trained = record("t", ["a.png"], [("human", "<image>\nDescribe the image."), ("gpt", "a bag"),
                                      ("human", "How many?"), ("gpt", "3")])  # fmt: skip
    ids, _ = encode_conversation(trained, [2], TOKENIZER, 257)
    said = [*b"a bag", TOKENIZER.eos_id]
    assert ids[: len(prefix) + len(said) + len(followup)] == [*prefix, *said, *followup]
    caption = record("c", ["a.png"], [("human", "<image>\nDescribe the image."), ("gpt", "a bag")])
    plain, none, text = encode_described_prompt(caption, [2], TOKENIZER, 257, "Describe the image.")
    assert none is None and (plain, text) == encode_prompt(caption, [2], TOKENIZER, 257)
    late = record("l", ["a.png"], [("human", "Hi"), ("gpt", "hi"), ("human", "<image>\nHow many?"), ("gpt", "3")])
    with pytest.raises(ConfigError, match="every <image> in the first human turn"):
        encode_described_prompt(late, [2], TOKENIZER, 257, "Describe the image.")


def test_describe_first_trains_on_caption_then_questions_and_generates_after_a_caption(generated):
    dm = small_module(generated, describe_first=True)
    dialogs, captions = records(generated, "train", "dialogs"), records(generated, "train", "captions")
    described = dm.sets["train"].records
    assert len(described) == COUNTS["train"]
    for full, dialog, cap in zip(described, dialogs, captions, strict=True):
        turns = full["conversations"]
        assert turns[:2] == cap["conversations"] and full["type"] == ["caption", *dialog["type"]]
        assert turns[2]["value"] == dialog["conversations"][0]["value"].removeprefix("<image>\n")
        assert turns[3:] == dialog["conversations"][1:]
    sample = dm.sets["train"].sample(0)
    targets = [t for t in sample["labels"] if t != IGNORE_INDEX]
    assert targets[: len(captions[0]["conversations"][1]["value"]) + 1] == [
        *captions[0]["conversations"][1]["value"].encode(),
        TOKENIZER.eos_id,
    ]  # the caption is supervised too
    batch = next(iter(dm.generation_dataloader("val")))
    assert all(f is not None and 257 not in f for f in batch["followups"])
    assert batch["described"] and not next(iter(small_module(generated).generation_dataloader("val")))["described"]
    assert all(TOKENIZER.decode([t for t in p if t != 257]).endswith("Describe the image.\nASSISTANT: ")
               for p in batch["prompts"])  # fmt: skip
    assert all(f is None for f in next(iter(small_module(generated).generation_dataloader("val")))["followups"])
    with pytest.raises(ConfigError, match=r"describe_first=true .* needs data\.multi_turn=true"):
        small_module(generated, describe_first=True, multi_turn=False)


def test_align_stage_trains_on_captions_and_evaluates_questions(generated):
    dm = small_module(generated, stage="align")
    assert {r["type"] for r in dm.sets["train"].records} == {"caption"}
    assert len(dm.sets["val"]) == COUNTS["val"]
    assert {r["type"] for r in dm.eval_sets["val"].records} == set(QUESTION_TYPES)
    batch = next(iter(dm.generation_dataloader("test")))
    assert set(batch["types"]) <= set(QUESTION_TYPES) and len(batch["prompts"]) == dm.batch_size


# ----------------------------------------------------------------------------------------------- bad input
def test_bad_records_fail_at_setup_naming_the_record(odd_images):
    def setup(items: list[dict], **kwargs) -> None:
        path = write_json(odd_images / "bad.json", items)
        args = {"image_folder": str(odd_images), "tile_size": 8, "max_tiles": 2, "patch_size": 4, **kwargs}
        LlavaDataModule(train_json=path, **args).setup()

    ok = record("fine", "sq.png", [("human", "<image>\nQ"), ("gpt", "a")])
    with pytest.raises(DatasetNotFoundError, match=r"'gone'.*missing\.png"):
        setup([ok, record("gone", "missing.png", [("human", "<image>\nQ"), ("gpt", "a")])], max_tiles=9)
    with pytest.raises(ConfigError, match=r"'two-tags' has 2 <image> tags but 1 images"):
        setup([record("two-tags", "sq.png", [("human", "<image>\n<image>\nQ"), ("gpt", "a")])], max_tiles=9)
    with pytest.raises(ConfigError, match=r"'no-tag' has 0 <image> tags but 1 images"):
        setup([record("no-tag", ["sq.png"], [("human", "Q"), ("gpt", "a")])], max_tiles=9)
    with pytest.raises(RecordImageTooLargeError, match=r"'big'.*wide\.png") as info:
        setup([record("big", "wide.png", [("human", "<image>\nQ"), ("gpt", "a")])])  # 50 px > 8 · 2
    assert isinstance(info.value, ImageTooLargeError)
    with pytest.raises(ConfigError, match=r"'long' has \d+ tokens.*data.max_tokens=20"):
        setup([record("long", "sq.png", [("human", "<image>\nQ"), ("gpt", "a")])], max_tiles=9, max_tokens=20)
    with pytest.raises(ConfigError, match=r"'who'.*turn 1"):
        setup([record("who", "sq.png", [("human", "<image>\nQ"), ("bot", "a")])], max_tiles=9)


def test_argument_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"data\.stage='pretrain'.*align, instruct"):
        CopyPasteVQADataModule(stage="pretrain")
    with pytest.raises(ConfigError, match=r"data\.stage"):
        LlavaDataModule(train_json="x.json", stage="sft")
    with pytest.raises(ConfigError, match=r"data\.image_token_id=100"):
        LlavaDataModule(train_json="x.json", image_token_id=100)
    with pytest.raises(ConfigError, match=r"data\.train_json is required"):
        LlavaDataModule()
    with pytest.raises(ConfigError, match=r"data\.tile_size=30.*data\.patch_size=8"):
        LlavaDataModule(train_json="x.json", tile_size=30, patch_size=8)


# ----------------------------------------------------------------------------------------------- configs
@pytest.mark.parametrize("name", ["llava_json", "copy_paste_vqa"])
def test_configs_list_every_key(name):
    cfg = OmegaConf.load(CONF_DATA / f"{name}.yaml")
    cls = DATA.get(cfg.name)
    assert cls is {"llava_json": LlavaDataModule, "copy_paste_vqa": CopyPasteVQADataModule}[name]
    params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    assert sorted(k for k in cfg if k != "name") == sorted(params)
    assert OmegaConf.to_container(cfg)["tile_size"] == "${model.config.tiling.tile_size}"


def test_even_rows_give_every_process_as_many_eval_batches():
    """Eval loss loaders under several processes: the rows are padded (repeating the first) so that every process
    runs the same number of collective steps; without ``even`` the shards may differ by one."""
    from tasks.data.vlm import RowSampler

    common = {"max_tokens": None, "batch_size": 2, "shuffle": False, "seed": 0, "drop_last": False}
    plain = [list(RowSampler([5] * 5, **common, num_replicas=2, rank=r)) for r in range(2)]
    assert [len(p) for p in plain] == [2, 1]
    even = [list(RowSampler([5] * 5, **common, num_replicas=2, rank=r, even=True)) for r in range(2)]
    assert [len(p) for p in even] == [2, 2] and even[1][1] == even[0][0]
    assert sorted(i for p in even for row in p for i in row) == [0, 0, 1, 1, 2, 3, 4]
