"""A generated visual-question-answering set in LLaVA format, from the copy-paste scenes of
:mod:`tasks.data.copy_paste`.

Each image is a :func:`compose` scene: by default (``layout="scattered"``) 1–5 garments / emoji pasted apart and
whole onto a photo; ``layout="overlap"`` piles 1–6 with occlusion as :func:`tasks.data.copy_paste.compose` does
(occluded objects dropped as that module annotates them). With probability :data:`DETAIL_PROBABILITY` one extra
**small object** is pasted where it touches no visible object. Every visible object (the small one included) is named by
:data:`NAMES` (one lowercase word per category). Per image the set holds one caption record
(``"<image>\\nDescribe the image."`` → ``"a trouser, an animal, a bag"``, the objects by the left edge of their
boxes) and one record per question (``type`` one of :data:`QUESTION_TYPES`):

=========== =================================== ==============================================================
type        question                            answer
=========== =================================== ==============================================================
count       How many objects are there?         the visible objects, ``"1"`` … ``"6"`` (``"7"`` piled)
presence    Is there a {name}?                  ``"yes"`` on odd image indices, ``"no"`` on even (exactly 50/50)
leftmost    Which object is leftmost?           the name of the object of the smallest box ``x``; not asked
                                                when the two leftmost boxes start within :func:`gap` pixels
quadrant    What is in the {top-left} quarter?  the name of the object whose box centre lies in that quarter,
                                                or ``"nothing"``; asked only of a quarter holding at most one
                                                centre and none within :func:`gap` pixels of its midlines
detail      What is the small object?           the small object's name (only images that have one)
=========== =================================== ==============================================================

**Why ``detail`` needs the tiles.** The small object's longer side is ``max(DETAIL_MIN, DETAIL_SCALE · size)``
pixels: 6 px of a 64-px image (the default). The thumbnail always has ``tile_size`` pixels per side, so the object
spans ``6 · 32 / 64 = 3`` px in the default 32-px thumbnail, whatever the image size — a blob of colour — while the
2 × 2 grid of 32-px tiles holds the image at its full 64 px, where the object keeps its 6 px (2×); with larger
images and more tiles (``image_size=96``, ``max_tiles=9``: 3 × 3 tiles) it spans 9 px against the thumbnail's 3.
A fixed-resolution model (``dynamic=False``) sees only the thumbnail.

Splits: ``train`` pastes objects of the copy-paste ``train`` bank (the Fashion-MNIST training file, four of five
emoji of each group); ``val`` and ``test`` the held-out ``val`` bank (the Fashion-MNIST test file, every fifth
emoji). Image ``i`` of split ``k`` is drawn from ``np.random.default_rng([seed, 100 + k, i])`` and its questions
from ``[seed, 100 + k, i, 1]``: deterministic by seed (byte-identical files for equal settings), disjoint across
splits. Output::

    out/train/000001.png ...   out/val/...   out/test/...
    out/<split>_captions.json  out/<split>_vqa.json    (LLaVA records, image paths relative to out)
    out/<split>_dialogs.json   (per image ONE record: all its questions as consecutive human / gpt turns in a
                                shuffled order, ``<image>`` in the first human turn, ``type`` the list of types)
    out/<split>_described.json (per image ONE record: the caption turn first — ``<image>`` and
                                ``Describe the image.`` — then the dialog's questions in its order: describe, then
                                answer; ``type`` ``["caption", *types]``)
    out/<split>_objects.json   (the annotations the answers come from: per image its objects' category, name,
                                box [x, y, w, h], area and whether it is the small one)

``<split>_vqa.json`` is written last (atomically): its presence means the split is complete.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from tasks.data import copy_paste
from tasks.data.copy_paste import CATEGORIES, ObjectBank, mask_bbox, paste
from zoo.errors import ConfigError
from zoo.io import atomic_write

log = logging.getLogger(__name__)

VERSION = 6  # bump when the output for given settings changes (part of the cache key, with copy_paste.VERSION)
SPLITS = ("train", "val", "test")
BANK = {"train": "train", "val": "val", "test": "val"}  # the copy-paste object bank each split pastes from
QUESTION_TYPES = ("count", "presence", "leftmost", "quadrant", "detail")
CAPTION_TYPE = "caption"
CAPTION_PROMPT = "Describe the image."
QUESTIONS = {
    "count": "How many objects are there?",
    "presence": "Is there {article} {name}?",
    "leftmost": "Which object is leftmost?",
    "quadrant": "What is in the {quarter} quarter?",
    "detail": "What is the small object?",
}
QUARTERS = ("top-left", "top-right", "bottom-left", "bottom-right")
NOTHING = "nothing"
_SHORT = {
    "T-shirt/top": "top", "Trouser": "trouser", "Pullover": "pullover", "Dress": "dress", "Coat": "coat",
    "Sandal": "sandal", "Shirt": "shirt", "Sneaker": "sneaker", "Bag": "bag", "Ankle boot": "boot",
    "Smileys & Emotion": "face", "Animals & Nature": "animal", "Food & Drink": "food", "Travel & Places": "place",
    "Activities": "sport", "Objects": "gadget",
}  # fmt: skip
NAMES: dict[int, str] = {c["id"]: _SHORT[c["name"]] for c in CATEGORIES}  # category id → one lowercase word
DETAIL_SCALE = 0.09  # the small object's longer side, as a fraction of the image side
DETAIL_MIN = 5  # … and at least this many pixels
DETAIL_PROBABILITY = 0.5  # share of the images with a small object
DETAIL_TRIES = 30  # random positions tried for the small object before the image goes without one
BACKGROUNDS = ("flat", "photo")  # background styles: one random colour | copy_paste's photos / textures
BACKGROUND = "photo"  # the default style ("flat" did not make vlm_tiny use the image in 3 epochs either)
LAYOUTS = ("scattered", "overlap")  # objects placed apart (boxes never touch) | copy_paste's occluding pile
LAYOUT = "scattered"  # the default: every object whole and apart, so count / leftmost / quadrant are unambiguous
SCALE = (0.2, 0.35)  # the default range of an object's longer side, as a fraction of the image side
MAX_OBJECTS = 5  # the default most objects per scene (besides the small one)
PLACEMENT_TRIES = 30  # random positions tried per object of a scattered scene before it is left out
PRESENCE_QUESTIONS = 1  # the default presence questions per image
TINT = "random"  # the default garment colours (copy_paste.TINTS)
HELDOUT_OBJECTS = True  # the default: val / test paste the held-out object bank (unseen garments and emoji)


def article(name: str) -> str:
    """``"an"`` before a vowel, else ``"a"``."""
    return "an" if name[0] in "aeiou" else "a"


def gap(size: int) -> int:
    """Pixels under which two box edges (or a centre and a quarter border) count as a near-tie: 5 % of the side,
    at least 2."""
    return max(2, round(0.05 * size))


# ------------------------------------------------------------------------------------------------ scene
def add_small_object(
    canvas: np.ndarray, masks: list[np.ndarray], bank: ObjectBank, rng: np.random.Generator
) -> tuple[int, np.ndarray] | None:
    """Paste one small object into the float ``[S, S, 3]`` ``canvas`` where it keeps a 1-px gap to every visible
    ``masks`` (bool ``[S, S]``); ``(category, mask bool [S, S])``, or None when no place was found."""
    size = canvas.shape[0]
    side = max(DETAIL_MIN, round(DETAIL_SCALE * size))
    category, sprite = bank.sample(rng, side)
    h, w = sprite.mask.shape
    if sprite.mask.sum() < 0.2 * side * side:
        return None
    taken = np.zeros((size, size), dtype=bool)
    for mask in masks:
        taken |= mask
    for _ in range(DETAIL_TRIES):
        y, x = int(rng.integers(size - h + 1)), int(rng.integers(size - w + 1))
        if not taken[max(0, y - 1) : y + h + 1, max(0, x - 1) : x + w + 1].any():
            return category, paste(canvas, sprite, x, y)
    return None


def make_background(rng: np.random.Generator, size: int, background: str = BACKGROUND) -> np.ndarray:
    """A ``[size, size, 3]`` uint8 background of style ``background`` (one of :data:`BACKGROUNDS`)."""
    if background == "flat":
        return np.broadcast_to(rng.integers(0, 256, 3, dtype=np.uint8), (size, size, 3)).copy()
    return copy_paste.make_background(rng, size)


def compose(
    bank: ObjectBank, rng: np.random.Generator, size: int, background: str = BACKGROUND,
    scale: tuple[float, float] = SCALE, layout: str = LAYOUT, max_objects: int = MAX_OBJECTS,
) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:  # fmt: skip
    """``(rgb uint8 [size, size, 3], [(category_id, visible mask bool [size, size]), ...])``: a scene on a
    background of style ``background`` with objects whose longer side is ``scale`` of ``size``.

    ``layout="overlap"``: :func:`tasks.data.copy_paste.compose` (1 … its ``MAX_OBJECTS`` objects piled with
    occlusion, those less than ``MIN_VISIBLE`` visible dropped; ``background="photo"`` with copy_paste's ``SCALE``
    draws the detection set's scenes). ``layout="scattered"``: 1 … ``max_objects`` objects, each at a random place
    where its mask's box keeps a 1-px gap to every earlier box (:data:`PLACEMENT_TRIES` tries, else left out), so
    every object is whole and the count, order and quarters are what a person would say.
    """
    make = functools.partial(make_background, background=background)
    if layout == "overlap":
        return copy_paste.compose(bank, rng, size, background=make, scale=scale)
    canvas = make(rng, size).astype(np.float32)
    taken = np.zeros((size, size), dtype=bool)
    visible: list[tuple[int, np.ndarray]] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        category, sprite = copy_paste.draw_object(bank, rng, size, scale)
        if not sprite.mask.any():
            continue
        h, w = sprite.mask.shape
        bx, by, bw, bh = mask_bbox(sprite.mask)  # the object's box inside its sprite
        for _ in range(PLACEMENT_TRIES):
            y, x = int(rng.integers(size - h + 1)), int(rng.integers(size - w + 1))
            top, left = y + by, x + bx
            if not taken[max(0, top - 1) : top + bh + 1, max(0, left - 1) : left + bw + 1].any():
                visible.append((category, paste(canvas, sprite, x, y)))
                taken[top : top + bh, left : left + bw] = True
                break
    return canvas.round().clip(0, 255).astype(np.uint8), visible


def make_scene(
    bank: ObjectBank, rng: np.random.Generator, size: int, background: str = BACKGROUND,
    scale: tuple[float, float] = SCALE, layout: str = LAYOUT, max_objects: int = MAX_OBJECTS,
) -> tuple[np.ndarray, list[dict[str, Any]]]:  # fmt: skip
    """``(rgb uint8 [size, size, 3], objects)``: a composed scene (:func:`compose`) and its visible objects, each
    ``{"category_id", "name", "bbox": [x, y, w, h], "area", "small"}``."""
    rgb, visible = compose(bank, rng, size, background, scale, layout, max_objects)
    small = None
    if rng.random() < DETAIL_PROBABILITY:
        canvas = rgb.astype(np.float32)
        small = add_small_object(canvas, [m for _, m in visible], bank, rng)
        if small is not None:
            rgb = canvas.round().clip(0, 255).astype(np.uint8)
    entries = [(c, m, False) for c, m in visible] + ([(*small, True)] if small is not None else [])
    objects = [
        {"category_id": c, "name": NAMES[c], "bbox": mask_bbox(m), "area": int(m.sum()), "small": s}
        for c, m, s in entries
    ]
    return rgb, objects


# ------------------------------------------------------------------------------------------------ questions
def caption(objects: list[dict[str, Any]]) -> str:
    """The objects left to right (box ``x``, then ``y``): ``"a trouser, an animal, a bag"``. (A caption that starts
    with the count and marks the small object, ``"3 objects: a trouser, an animal, a small bag"``, left the
    vision-language model blind in every run tried: see docs/results.md.)"""
    ordered = sorted(objects, key=lambda o: (o["bbox"][0], o["bbox"][1], o["name"]))
    return ", ".join(f"{article(o['name'])} {o['name']}" for o in ordered)


def _centre(obj: dict[str, Any]) -> tuple[float, float]:
    x, y, w, h = obj["bbox"]
    return x + w / 2, y + h / 2


def quarter_answers(objects: list[dict[str, Any]], size: int) -> dict[str, str]:
    """``{quarter: answer}`` for every quarter that may be asked about: at most one box centre in it, and no centre
    within :func:`gap` pixels of the midlines that bound it."""
    half, margin = size / 2, gap(size)
    inside: dict[int, list[str]] = {q: [] for q in range(len(QUARTERS))}
    unclear: set[int] = set()
    for obj in objects:
        cx, cy = _centre(obj)
        cols = [c for c, ok in ((0, cx < half + margin), (1, cx >= half - margin)) if ok]
        rows = [r for r, ok in ((0, cy < half + margin), (1, cy >= half - margin)) if ok]
        for q in (2 * r + c for r in rows for c in cols):
            (unclear.add(q) if len(cols) * len(rows) > 1 else inside[q].append(obj["name"]))
    return {
        quarter: (inside[q][0] if inside[q] else NOTHING)
        for q, quarter in enumerate(QUARTERS)
        if q not in unclear and len(inside[q]) <= 1
    }


def questions(
    objects: list[dict[str, Any]], size: int, index: int, names: list[str], rng: np.random.Generator,
    presence_questions: int = PRESENCE_QUESTIONS,
) -> list[tuple[str, str, str]]:  # fmt: skip
    """``[(type, question, answer), ...]`` about one image (``index`` 1-based; ``names`` those the split's bank can
    paste, from which absent ones are drawn). ``presence_questions``: how many presence questions (about distinct
    names, ``"yes"`` and ``"no"`` alternating from the image's parity; fewer when the names run out)."""
    out = [("count", QUESTIONS["count"], str(len(objects)))]
    present = sorted({o["name"] for o in objects})
    absent = [n for n in names if n not in present]
    pool, answer = (present, "yes") if index % 2 == 1 or not absent else (absent, "no")
    name = pool[int(rng.integers(len(pool)))]
    out.append(("presence", QUESTIONS["presence"].format(article=article(name), name=name), answer))
    xs = sorted(objects, key=lambda o: o["bbox"][0])
    if len(xs) == 1 or xs[1]["bbox"][0] - xs[0]["bbox"][0] >= gap(size):
        out.append(("leftmost", QUESTIONS["leftmost"], xs[0]["name"]))
    quarters = quarter_answers(objects, size)
    filled = [q for q, a in quarters.items() if a != NOTHING]
    empty = [q for q, a in quarters.items() if a == NOTHING]
    if filled or empty:
        choices = filled if filled and (not empty or rng.random() < 0.5) else empty
        quarter = choices[int(rng.integers(len(choices)))]
        out.append(("quadrant", QUESTIONS["quadrant"].format(quarter=quarter), quarters[quarter]))
    small = [o for o in objects if o["small"]]
    if small:
        out.append(("detail", QUESTIONS["detail"], small[0]["name"]))
    extra, asked = [], {name}  # drawn last: the first presence question and the others stay as with one
    for j in range(1, presence_questions):
        yes = (index + j) % 2 == 1
        pool = [n for n in (present if yes else absent) if n not in asked]
        if not pool:
            continue
        other = pool[int(rng.integers(len(pool)))]
        asked.add(other)
        extra.append(("presence", QUESTIONS["presence"].format(article=article(other), name=other),
                      "yes" if yes else "no"))  # fmt: skip
    return out[:2] + extra + out[2:]


def _record(split: str, index: int, kind: str, question: str, answer: str) -> dict[str, Any]:
    return {
        "id": f"{split}-{index:06d}-{kind}",
        "image": f"{split}/{index:06d}.png",
        "conversations": [{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer}],
        "type": kind,
    }


def _dialog(split: str, index: int, items: list[tuple[str, str, str]], name: str = "dialog") -> dict[str, Any]:
    """One record holding every question of image ``index`` as consecutive human / gpt turns (``<image>`` in the
    first human turn only); ``type`` lists the questions' types in turn order."""
    conversations: list[dict[str, str]] = []
    for k, (_, question, answer) in enumerate(items):
        conversations += [
            {"from": "human", "value": f"<image>\n{question}" if k == 0 else question},
            {"from": "gpt", "value": answer},
        ]
    return {
        "id": f"{split}-{index:06d}-{name}",
        "image": f"{split}/{index:06d}.png",
        "conversations": conversations,
        "type": [kind for kind, _, _ in items],
    }


def _write_json(path: Path, items: list[Any]) -> None:
    """A JSON list, one item per line (sorted keys: byte-identical for equal content), atomically."""
    with atomic_write(path, "w") as handle:
        handle.write("[\n" + ",\n".join(json.dumps(item, sort_keys=True) for item in items) + "\n]\n")


# ------------------------------------------------------------------------------------------------ files
def check_categories(categories: Any) -> list[str] | None:
    """``categories`` checked: null (every category) or a non-empty list of distinct :data:`NAMES` values."""
    if categories is None:
        return None
    valid = sorted(NAMES.values())
    if isinstance(categories, str) or not isinstance(categories, (list, tuple)) or not categories:
        raise ConfigError(
            f"categories must be null (all) or a non-empty list of names from {valid}, got {categories!r}"
        )
    unknown = [c for c in categories if c not in valid]
    if unknown:
        raise ConfigError(f"categories: unknown name(s) {unknown}; valid names: {valid}")
    if len(set(categories)) != len(categories):
        raise ConfigError(f"categories lists a name twice: {list(categories)}")
    return list(categories)


def object_bank(
    split: str, categories: list[str] | None = None, heldout_objects: bool = HELDOUT_OBJECTS, tint: str = TINT
) -> ObjectBank:
    """The copy-paste :class:`~tasks.data.copy_paste.ObjectBank` that ``split`` pastes from: the held-out bank for
    val / test (``heldout_objects``; else the training bank: new scenes of seen objects), restricted to the
    categories named in ``categories`` (:data:`NAMES` values; null: all), its garments tinted by ``tint`` (one of
    :data:`~tasks.data.copy_paste.TINTS`)."""
    bank = ObjectBank(BANK[split] if heldout_objects else "train", tint=tint)
    categories = check_categories(categories)
    if categories is not None:
        wanted = {c for c, name in NAMES.items() if name in categories}
        bank.category_ids = [c for c in bank.category_ids if c in wanted]
        if not bank.category_ids:
            raise ConfigError(f"categories {categories}: none of them has objects on this machine")
    return bank


def split_paths(out: str | os.PathLike, split: str) -> dict[str, Path]:
    """``{"captions", "vqa", "dialogs", "described", "objects"}`` → the split's JSON files under ``out``."""
    out = Path(out).expanduser()
    return {kind: out / f"{split}_{kind}.json" for kind in ("captions", "vqa", "dialogs", "described", "objects")}


def generate_split(
    out: str | os.PathLike, split: str, count: int, *, size: int = 64, seed: int = 0, background: str = BACKGROUND,
    scale: tuple[float, float] = SCALE, layout: str = LAYOUT, max_objects: int = MAX_OBJECTS,
    categories: list[str] | None = None, heldout_objects: bool = HELDOUT_OBJECTS,
    presence_questions: int = PRESENCE_QUESTIONS, tint: str = TINT,
) -> dict[str, Path]:  # fmt: skip
    """Write ``count`` images of ``split`` and their records under ``out``; returns :func:`split_paths`.
    ``background``, ``scale``, ``layout`` and ``max_objects``: see :func:`compose`; ``categories``,
    ``heldout_objects`` and ``tint``: see :func:`object_bank`; ``presence_questions``: see :func:`questions`."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"the {split} image count must be an integer >= 1, got {count!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 32:
        raise ConfigError(f"image_size must be an integer >= 32, got {size!r}")
    if background not in BACKGROUNDS:
        raise ConfigError(f"background must be one of {BACKGROUNDS}, got {background!r}")
    if layout not in LAYOUTS:
        raise ConfigError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if isinstance(max_objects, bool) or not isinstance(max_objects, int) or max_objects < 1:
        raise ConfigError(f"max_objects must be an integer >= 1, got {max_objects!r}")
    if isinstance(presence_questions, bool) or not isinstance(presence_questions, int) or presence_questions < 1:
        raise ConfigError(f"presence_questions must be an integer >= 1, got {presence_questions!r}")
    scale = _scale(scale)
    out = Path(out).expanduser()
    bank = object_bank(split, categories, heldout_objects, tint)
    names = sorted({NAMES[c] for c in bank.category_ids})
    code = 100 + SPLITS.index(split)
    images, captions, vqa, dialogs, described = [], [], [], [], []
    for index in range(1, count + 1):
        rgb, objects = make_scene(
            bank, np.random.default_rng([seed, code, index]), size, background, scale, layout, max_objects
        )
        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, format="PNG")  # lossless: the small object keeps its pixels
        file = f"{split}/{index:06d}.png"
        with atomic_write(out / file) as handle:
            handle.write(buffer.getvalue())
        images.append({"file": file, "objects": objects})
        captions.append(_record(split, index, CAPTION_TYPE, CAPTION_PROMPT, caption(objects)))
        rng = np.random.default_rng([seed, code, index, 1])
        items = questions(objects, size, index, names, rng, presence_questions)
        seen: dict[str, int] = {}
        for kind, question, answer in items:  # a repeated type's records are told apart: presence, presence2, …
            seen[kind] = seen.get(kind, 0) + 1
            vqa.append({**_record(split, index, kind, question, answer),
                        "id": f"{split}-{index:06d}-{kind}{seen[kind] if seen[kind] > 1 else ''}"})  # fmt: skip
        order = np.random.default_rng([seed, code, index, 2]).permutation(len(items))  # turn order: shuffled
        dialogs.append(_dialog(split, index, [items[k] for k in order]))
        described.append(
            _dialog(split, index, [(CAPTION_TYPE, CAPTION_PROMPT, caption(objects))] + [items[k] for k in order],
                    "described")
        )  # fmt: skip
    paths = split_paths(out, split)
    info = {"split": split, "bank": BANK[split] if heldout_objects else "train", "seed": seed, "image_size": size,
            "version": VERSION, "background": background, "scale": list(scale), "layout": layout,
            "max_objects": max_objects, "categories": [NAMES[c] for c in bank.category_ids],
            "presence_questions": presence_questions, "tint": tint}  # fmt: skip
    with atomic_write(paths["objects"], "w") as handle:
        handle.write(json.dumps({"info": info, "images": images}, sort_keys=True) + "\n")
    _write_json(paths["captions"], captions)
    _write_json(paths["dialogs"], dialogs)
    _write_json(paths["described"], described)
    _write_json(paths["vqa"], vqa)
    log.info("wrote %d %s images, %d captions and %d questions to %s", count, split, count, len(vqa), out)
    return paths


def _scale(scale: Any) -> tuple[float, float]:
    """``scale`` checked: two fractions ``0 < lo <= hi <= 1``."""
    try:
        lo, hi = (float(v) for v in scale)
    except (TypeError, ValueError):
        raise ConfigError(f"scale must be two fractions (lo, hi), got {scale!r}") from None
    if not 0 < lo <= hi <= 1:
        raise ConfigError(f"scale must satisfy 0 < lo <= hi <= 1, got {scale!r}")
    return lo, hi


def generate(
    out: str | os.PathLike, train: int = 2000, val: int = 200, test: int = 200, *, size: int = 64, seed: int = 0,
    background: str = BACKGROUND, scale: tuple[float, float] = SCALE, layout: str = LAYOUT,
    max_objects: int = MAX_OBJECTS, categories: list[str] | None = None, heldout_objects: bool = HELDOUT_OBJECTS,
    presence_questions: int = PRESENCE_QUESTIONS, tint: str = TINT,
) -> dict[str, dict[str, Path]]:  # fmt: skip
    """Every split (test, val, then train); returns ``{split: split_paths}``."""
    counts = {"test": test, "val": val, "train": train}
    kwargs = {"size": size, "seed": seed, "background": background, "scale": scale, "layout": layout,
              "max_objects": max_objects, "categories": categories, "heldout_objects": heldout_objects,
              "presence_questions": presence_questions, "tint": tint}  # fmt: skip
    return {split: generate_split(out, split, n, **kwargs) for split, n in counts.items()}


def settings(
    train: int, val: int, test: int, size: int, seed: int, background: str = BACKGROUND,
    scale: tuple[float, float] = SCALE, layout: str = LAYOUT, max_objects: int = MAX_OBJECTS,
    categories: list[str] | None = None, heldout_objects: bool = HELDOUT_OBJECTS,
    presence_questions: int = PRESENCE_QUESTIONS, tint: str = TINT,
) -> dict[str, Any]:  # fmt: skip
    """What determines the generated files (hashed into the cache folder's name)."""
    import importlib.util

    return {
        "version": [VERSION, copy_paste.VERSION],
        "counts": [train, val, test],
        "size": size,
        "seed": seed,
        "background": background,
        "scale": list(_scale(scale)),
        "layout": layout,
        "max_objects": max_objects,
        "categories": check_categories(categories),
        "heldout_objects": bool(heldout_objects),
        "presence_questions": presence_questions,
        "tint": tint,
        "emoji": copy_paste.emoji_available(),
        "garments": copy_paste.garments_available(),
        "photos": importlib.util.find_spec("skimage") is not None,  # else procedural backgrounds
    }


def is_complete(out: str | os.PathLike, split: str) -> bool:
    """Whether ``split`` has been generated under ``out`` (its ``_vqa.json``, written last, exists)."""
    return split_paths(out, split)["vqa"].is_file()
