"""A copy-paste instance-segmentation set written as COCO JSON: real objects with masks pasted onto real images.

Objects (each with an exact mask) come from two local sources, and are pasted onto backgrounds:

* **garments** — Fashion-MNIST images (Debian ``dataset-fashion-mnist``), mask = pixel > :data:`GARMENT_THRESHOLD`,
  tinted with a random colour (``ObjectBank(tint="category")``: a hue per garment class); category = the garment
  class (10 categories). The train split pastes garments of the Fashion-MNIST training file, the val split those
  of the test file.
* **emoji** — fully-qualified emoji of Debian ``fonts-noto-color-emoji`` rendered with Pillow, mask = alpha ≥ 128;
  category = the emoji's Unicode group (``/usr/share/unicode/emoji/emoji-test.txt`` of Debian ``unicode-data``),
  one of :data:`EMOJI_GROUPS`. Every fifth emoji of a group is kept for the val split.
* **backgrounds** — scikit-image's bundled photos and textures (random square crop, resize, flip); procedural
  textures (gradients + noise) if scikit-image is not installed.

Each image holds 1–6 pastes of random size and position; a later paste occludes earlier ones, whose masks lose the
covered pixels, and an object left with less than :data:`MIN_VISIBLE` of its pixels is dropped from the annotations.
The category list is always all :data:`CATEGORIES` (ids 1..16), even when a source is missing, so ``num_classes``
does not depend on the machine. Output, deterministic by seed (byte-identical JSON for equal settings)::

    out/train/000001.jpg ...            out/val/000001.jpg ...
    out/annotations/instances_train.json, out/annotations/instances_val.json

Segmentations are uncompressed COCO RLE, ``{"size": [h, w], "counts": [...]}`` (column-major runs starting with
background), which ``pycocotools.mask.frPyObjects`` and :func:`rle_decode` read. ``bbox`` is the tight ``[x, y, w,
h]`` box of the mask and ``area`` its pixel count.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from tasks.data.fashion_mnist import CLASSES as GARMENT_CLASSES
from tasks.data.fashion_mnist import DEBIAN_DIR as FASHION_MNIST_DIR
from tasks.data.fashion_mnist import find_file
from tasks.data.idx import read_idx
from zoo.errors import ConfigError, DatasetNotFoundError
from zoo.io import atomic_write

log = logging.getLogger(__name__)

VERSION = 1  # bump when the output for given settings changes (part of the cache key)
EMOJI_FONT = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
EMOJI_TEST = "/usr/share/unicode/emoji/emoji-test.txt"
EMOJI_GROUPS = ("Smileys & Emotion", "Animals & Nature", "Food & Drink", "Travel & Places", "Activities", "Objects")
CATEGORIES: tuple[dict, ...] = tuple(
    [{"id": i + 1, "name": name, "supercategory": "garment"} for i, name in enumerate(GARMENT_CLASSES)]
    + [{"id": len(GARMENT_CLASSES) + i + 1, "name": g, "supercategory": "emoji"} for i, g in enumerate(EMOJI_GROUPS)]
)
BACKGROUNDS = ("astronaut", "coffee", "chelsea", "rocket", "brick", "grass", "gravel", "camera", "moon", "coins")
GARMENT_THRESHOLD = 30
TINTS = ("random", "category")  # a garment's colour: any hue | its class's own hue (a cue a small model learns fast)
MIN_VISIBLE = 0.2
MAX_OBJECTS = 6
SCALE = (0.15, 0.5)  # an object's longer side, as a fraction of the image size
SPLITS = ("train", "val")


# ------------------------------------------------------------------------------------------------ RLE
def rle_encode(mask: np.ndarray) -> dict:
    """Uncompressed COCO RLE of a bool ``[H, W]`` mask: run lengths of the column-major pixels, background first."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(c) for c in counts]}


def _decode_counts_string(s: str) -> list[int]:
    """The run lengths of a compressed COCO RLE string (pycocotools' ``rleFrString``)."""
    counts: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def rle_decode(rle: dict) -> np.ndarray:
    """A bool ``[H, W]`` mask from COCO RLE, uncompressed (``counts`` a list) or compressed (a string)."""
    h, w = rle["size"]
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        counts = _decode_counts_string(counts.decode() if isinstance(counts, bytes) else counts)
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, np.asarray(counts, dtype=np.int64))
    if flat.size != h * w:
        raise ValueError(f"RLE counts sum to {flat.size}, not {h}×{w}")
    return flat.reshape((w, h)).T


def polygons_decode(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """A bool ``[H, W]`` mask from COCO polygons ``[[x1, y1, x2, y2, ...], ...]`` (rasterised with Pillow)."""
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for poly in polygons:
        if len(poly) >= 6:
            draw.polygon([(float(poly[i]), float(poly[i + 1])) for i in range(0, len(poly) - 1, 2)], fill=1)
    return np.asarray(canvas, dtype=bool)


def mask_bbox(mask: np.ndarray) -> list[int]:
    """Tight COCO box ``[x, y, w, h]`` of a non-empty bool mask (pixel units, inclusive extent)."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]


# ------------------------------------------------------------------------------------------------ sources
@dataclass(frozen=True)
class Sprite:
    """An object to paste: ``rgb`` uint8 ``[h, w, 3]``, ``alpha`` float ``[h, w]`` in 0..1, ``mask`` bool ``[h, w]``."""

    rgb: np.ndarray
    alpha: np.ndarray
    mask: np.ndarray


def emoji_available() -> bool:
    """Whether the Noto Color Emoji font and ``emoji-test.txt`` are installed and Pillow renders the font."""
    if not (os.path.isfile(EMOJI_FONT) and os.path.isfile(EMOJI_TEST)):
        return False
    try:
        return _render_emoji("\U0001f600").getbbox() is not None
    except (OSError, ValueError):
        return False


def garments_available(root: str | None = None) -> bool:
    directory = Path(root or os.environ.get("ZOO_FASHION_MNIST") or FASHION_MNIST_DIR).expanduser()
    stems = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    return all(find_file(directory, stem) is not None for stem in stems)


@functools.lru_cache(maxsize=1)
def _emoji_font() -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(EMOJI_FONT, 109)  # a CBDT bitmap font: 109 px is its only size


def _render_emoji(text: str) -> Image.Image:
    image = Image.new("RGBA", (136, 128), (0, 0, 0, 0))
    ImageDraw.Draw(image).text((0, 0), text, font=_emoji_font(), embedded_color=True)
    return image


@functools.lru_cache(maxsize=1)
def emoji_by_group() -> dict[str, tuple[tuple[str, str], ...]]:
    """``{group: ((emoji, name), ...)}`` of the fully-qualified emoji of :data:`EMOJI_GROUPS`, in file order."""
    groups: dict[str, list[tuple[str, str]]] = {g: [] for g in EMOJI_GROUPS}
    group = ""
    with open(EMOJI_TEST, encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("# group:"):
                group = line.split(":", 1)[1].strip()
            if line.startswith("#") or ";" not in line or group not in groups:
                continue
            codepoints, rest = line.split(";", 1)
            if rest.split("#", 1)[0].strip() != "fully-qualified":
                continue
            name = rest.split("#", 1)[1].strip().split(" ", 2)[2]
            groups[group].append(("".join(chr(int(c, 16)) for c in codepoints.split()), name))
    return {g: tuple(v) for g, v in groups.items()}


@functools.lru_cache(maxsize=4096)
def _emoji_rgba(text: str) -> np.ndarray:
    """The rendered emoji cropped to its alpha box: uint8 ``[h, w, 4]``."""
    image = _render_emoji(text)
    return np.asarray(image.crop(image.getbbox()))


def check_tint(tint: str) -> str:
    """``tint`` checked: one of :data:`TINTS`."""
    if tint not in TINTS:
        raise ConfigError(f"tint={tint!r} is not a garment tint; valid choices: {', '.join(TINTS)}")
    return tint


class ObjectBank:
    """The pasteable objects of one split, by category id (only categories with objects are keys)."""

    def __init__(self, split: str, fashion_mnist_root: str | None = None, tint: str = "random") -> None:
        self.tint = check_tint(tint)
        self.garments: tuple[np.ndarray, np.ndarray] | None = None  # (images [N, 28, 28], labels [N])
        self.emoji: dict[int, tuple[str, ...]] = {}
        if garments_available(fashion_mnist_root):
            directory = Path(
                fashion_mnist_root or os.environ.get("ZOO_FASHION_MNIST") or FASHION_MNIST_DIR
            ).expanduser()
            prefix = "train" if split == "train" else "t10k"
            images = read_idx(find_file(directory, f"{prefix}-images-idx3-ubyte"))
            labels = read_idx(find_file(directory, f"{prefix}-labels-idx1-ubyte")).astype(np.int64)
            self.garments = (images, labels)
            self.garment_index = {c: np.flatnonzero(labels == c) for c in range(len(GARMENT_CLASSES))}
        else:
            log.warning("Fashion-MNIST not found (apt-get install dataset-fashion-mnist): pasting emoji only")
        if emoji_available():
            for i, items in enumerate(emoji_by_group().values()):
                keep = [e for j, (e, _) in enumerate(items) if (j % 5 == 4) == (split == "val")]
                self.emoji[len(GARMENT_CLASSES) + i + 1] = tuple(keep)
        else:
            log.warning(
                "emoji unavailable (apt-get install fonts-noto-color-emoji unicode-data for %s and %s): "
                "pasting Fashion-MNIST garments only",
                EMOJI_FONT,
                EMOJI_TEST,
            )
        self.category_ids = sorted(
            ([c + 1 for c in range(len(GARMENT_CLASSES)) if len(self.garment_index[c])] if self.garments else [])
            + [c for c, items in self.emoji.items() if items]
        )
        if not self.category_ids:
            raise DatasetNotFoundError(
                "copy-paste objects not found: install Fashion-MNIST (apt-get install dataset-fashion-mnist) "
                "and/or the emoji (apt-get install fonts-noto-color-emoji unicode-data)"
            )

    def sample(self, rng: np.random.Generator, longer_side: int) -> tuple[int, Sprite]:
        """A random object (uniform over categories, then instances), scaled to ``longer_side`` px."""
        category = int(self.category_ids[rng.integers(len(self.category_ids))])
        if category <= len(GARMENT_CLASSES):
            images, _ = self.garments
            pool = self.garment_index[category - 1]
            grey = Image.fromarray(images[pool[rng.integers(len(pool))]])
            grey = np.asarray(grey.resize((longer_side, longer_side), Image.Resampling.BILINEAR), dtype=np.float32)
            mask = grey > GARMENT_THRESHOLD
            hue = rng.random()  # "category": the class's own hue (± 3 % of the circle), else any hue
            if self.tint == "category":
                hue = ((category - 1) / len(GARMENT_CLASSES) + 0.06 * (hue - 0.5)) % 1.0
            hsv = np.array([[[hue * 255, 100 + rng.random() * 155, 140 + rng.random() * 115]]], np.uint8)
            colour = np.asarray(Image.fromarray(hsv, "HSV").convert("RGB"), dtype=np.float32)[0, 0]
            rgb = colour * (0.35 + 0.65 * grey[..., None] / 255)
            return category, Sprite(rgb.clip(0, 255).astype(np.uint8), mask.astype(np.float32), mask)
        items = self.emoji[category]
        rgba = _emoji_rgba(items[rng.integers(len(items))])
        h, w = rgba.shape[:2]
        scale = longer_side / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        rgba = np.asarray(Image.fromarray(rgba, "RGBA").resize(size, Image.Resampling.LANCZOS))
        alpha = rgba[..., 3].astype(np.float32) / 255
        return category, Sprite(rgba[..., :3], alpha, rgba[..., 3] >= 128)


@functools.lru_cache(maxsize=1)
def background_images() -> tuple[np.ndarray, ...]:
    """scikit-image's bundled images of :data:`BACKGROUNDS` as uint8 ``[H, W, 3]``; ``()`` without scikit-image."""
    try:
        import skimage.data
    except ImportError:
        log.warning("scikit-image not installed (pip install scikit-image): procedural background textures")
        return ()
    images = []
    for name in BACKGROUNDS:
        try:
            image = np.asarray(getattr(skimage.data, name)())
        except Exception as exc:  # a missing bundled image only shrinks the pool
            log.warning("scikit-image background %s unavailable: %s", name, exc)
            continue
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        images.append(np.ascontiguousarray(image[..., :3].astype(np.uint8)))
    return tuple(images)


def make_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A ``[size, size, 3]`` uint8 background: a random square crop of a photo/texture, resized, maybe flipped."""
    pool = background_images()
    if not pool:
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
        a, b = rng.random(3) * 255, rng.random(3) * 255
        t = (xx * rng.random() + yy * rng.random())[..., None] / 2
        image = a * (1 - t) + b * t + rng.normal(0, 12 + 20 * rng.random(), (size, size, 1))
        return image.clip(0, 255).astype(np.uint8)
    image = pool[rng.integers(len(pool))]
    h, w = image.shape[:2]
    side = int(min(h, w) * (0.4 + 0.6 * rng.random()))
    y, x = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
    crop = Image.fromarray(image[y : y + side, x : x + side]).resize((size, size), Image.Resampling.BILINEAR)
    out = np.asarray(crop)
    return np.ascontiguousarray(out[:, ::-1]) if rng.random() < 0.5 else out.copy()


# ------------------------------------------------------------------------------------------------ composition
def paste(canvas: np.ndarray, sprite: Sprite, x: int, y: int) -> np.ndarray:
    """Blend ``sprite`` into the float ``[S, S, 3]`` ``canvas`` in place with its top-left corner at ``(x, y)``
    (it must fit); returns its mask on the canvas, bool ``[S, S]``."""
    h, w = sprite.mask.shape
    region = canvas[y : y + h, x : x + w]
    alpha = np.where(sprite.mask, 1.0, sprite.alpha)[..., None]  # hard inside the mask, soft edges outside
    region[:] = region * (1 - alpha) + sprite.rgb.astype(np.float32) * alpha
    mask = np.zeros(canvas.shape[:2], dtype=bool)
    mask[y : y + h, x : x + w] = sprite.mask
    return mask


def draw_object(
    bank: ObjectBank, rng: np.random.Generator, size: int, scale: tuple[float, float] = SCALE
) -> tuple[int, Sprite]:
    """A random object of ``bank`` whose longer side is ``scale[0]`` … ``scale[1]`` of ``size`` (at least 4 px),
    mirrored left-right with probability 1/2: ``(category_id, sprite)``."""
    longer = max(4, int(size * (scale[0] + (scale[1] - scale[0]) * rng.random())))
    category, sprite = bank.sample(rng, longer)
    if rng.random() < 0.5:
        sprite = Sprite(sprite.rgb[:, ::-1], sprite.alpha[:, ::-1], sprite.mask[:, ::-1])
    return category, sprite


def compose(
    bank: ObjectBank,
    rng: np.random.Generator,
    size: int,
    *,
    background: Callable[[np.random.Generator, int], np.ndarray] | None = None,
    scale: tuple[float, float] = SCALE,
) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """One image: ``(rgb uint8 [size, size, 3], [(category_id, visible mask bool [size, size]), ...])``, on
    ``background(rng, size)`` (default :func:`make_background`), each object's longer side ``scale[0]`` …
    ``scale[1]`` of ``size``."""
    canvas = (background or make_background)(rng, size).astype(np.float32)
    objects: list[list] = []  # [category, mask, full area]
    for _ in range(int(rng.integers(1, MAX_OBJECTS + 1))):
        category, sprite = draw_object(bank, rng, size, scale)
        h, w = sprite.mask.shape
        y, x = int(rng.integers(size - h + 1)), int(rng.integers(size - w + 1))
        mask = paste(canvas, sprite, x, y)
        if not mask.any():
            continue
        for obj in objects:
            obj[1] &= ~mask
        objects.append([category, mask, int(mask.sum())])
    visible = [(c, m) for c, m, area in objects if m.sum() >= MIN_VISIBLE * area and m.any()]
    return canvas.round().clip(0, 255).astype(np.uint8), visible


def generate_split(
    out: str | os.PathLike,
    split: str,
    count: int,
    *,
    size: int = 256,
    seed: int = 0,
    fashion_mnist_root: str | None = None,
    image_format: str = "jpg",
) -> Path:
    """Write ``count`` images to ``out/<split>/`` and their COCO JSON to ``out/annotations/instances_<split>.json``.

    Image ``i`` (1-based) is drawn from ``np.random.default_rng([seed, split index, i])``, so each image depends only
    on the settings and its index. Returns the annotation file's path (written last, atomically: its presence
    means the split is complete).
    """
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
    if count < 1:
        raise ConfigError(f"the {split} image count must be >= 1, got {count}")
    if size < 32:
        raise ConfigError(f"image_size must be >= 32, got {size}")
    if image_format not in ("jpg", "png"):
        raise ConfigError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
    out = Path(out).expanduser()
    bank = ObjectBank(split, fashion_mnist_root)
    images, annotations = [], []
    for index in range(1, count + 1):
        rng = np.random.default_rng([seed, SPLITS.index(split), index])
        rgb, objects = compose(bank, rng, size)
        file_name = f"{index:06d}.{image_format}"
        buffer = io.BytesIO()
        if image_format == "jpg":
            Image.fromarray(rgb).save(buffer, format="JPEG", quality=92)
        else:
            Image.fromarray(rgb).save(buffer, format="PNG")
        with atomic_write(out / split / file_name) as handle:
            handle.write(buffer.getvalue())
        images.append({"id": index, "file_name": file_name, "height": size, "width": size})
        for category, mask in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index,
                    "category_id": category,
                    "bbox": mask_bbox(mask),
                    "area": int(mask.sum()),
                    "iscrowd": 0,
                    "segmentation": rle_encode(mask),
                }
            )
    coco = {
        "info": {"description": f"zoo copy-paste {split} set", "version": VERSION, "seed": seed, "image_size": size},
        "images": images,
        "annotations": annotations,
        "categories": [dict(c) for c in CATEGORIES],
    }
    path = out / "annotations" / f"instances_{split}.json"
    with atomic_write(path, "w") as handle:
        handle.write(json.dumps(coco, sort_keys=True, separators=(",", ":")))
        handle.write("\n")
    log.info("wrote %d %s images with %d objects to %s", count, split, len(annotations), out / split)
    return path


def generate(
    out: str | os.PathLike,
    train: int = 512,
    val: int = 128,
    *,
    size: int = 256,
    seed: int = 0,
    fashion_mnist_root: str | None = None,
    image_format: str = "jpg",
) -> dict[str, Path]:
    """Both splits (val first, train last); returns ``{split: annotation path}``."""
    for split, count in (("train", train), ("val", val)):
        if count < 1:
            raise ConfigError(f"the {split} image count must be >= 1, got {count}")
    kwargs = dict(size=size, seed=seed, fashion_mnist_root=fashion_mnist_root, image_format=image_format)
    paths = {"val": generate_split(out, "val", val, **kwargs)}
    paths["train"] = generate_split(out, "train", train, **kwargs)
    return paths
