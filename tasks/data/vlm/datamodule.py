"""Vision-language DataModules: ``llava_json`` (any LLaVA-format JSON + image folder) and ``copy_paste_vqa`` (the
generated set of :mod:`tasks.data.vlm.copy_paste_vqa`, read through the same machinery).

Every record is checked in :meth:`LlavaDataModule.setup`, before any step: its turns, its image files (present,
readable, no larger than the largest grid), its ``<image>`` tags against its images, and its length against
``max_tokens``. Loaders then only decode and tile images: nothing is left to fail mid-epoch but a file that
changes or breaks after setup. Batches: see :mod:`tasks.data.vlm.collate`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader

from tasks.data import copy_paste
from tasks.data.text import ResumableLoader
from tasks.data.tokenizer import ByteTokenizer, Tokenizer
from tasks.data.vlm import copy_paste_vqa
from tasks.data.vlm.collate import Collate, Rows, RowSampler, eval_collate
from tasks.data.vlm.conversation import (
    count_image_tags,
    encode_conversation,
    encode_described_prompt,
    encode_prompt,
    image_paths,
)
from zoo.errors import ConfigError, DatasetNotFoundError
from zoo.registries import DATA
from zoo.vision_language.tiling import ImageTooLargeError, Tiling

log = logging.getLogger(__name__)

STAGES = ("align", "instruct")
BLANK = 128  # the grey level of the blind baseline's images
SPLITS = ("train", "val", "test")


class RecordImageTooLargeError(ImageTooLargeError, ConfigError):
    """A record's image is larger than the largest grid (an :class:`ImageTooLargeError` that names the record;
    also a ``ConfigError``, so the front ends print it as one paragraph)."""


class LlavaSet:
    """The checked records of LLaVA JSON files, as training samples (:meth:`sample`) and generation samples
    (:meth:`prompt`); sample dicts as in :mod:`tasks.data.vlm.collate`.

    Args:
        files: JSON files, each a list of records; their records are concatenated in order.
        image_folder: the folder the records' image paths are relative to.
        tiling: how images are cut into tiles.
        patches_per_tile: ``P``, vision tokens per tile.
        tokenizer: text → ids (eos ends each answer).
        image_token_id: the placeholder id.
        max_tokens: the longest sample (in tokens) allowed.
        blind: every image replaced by a blank (``BLANK`` grey) image of its size.
        prompts: also check the generation prompt of every record (the last gpt turn is the answer).
        describe: describe-then-answer generation (:func:`encode_described_prompt`): the model first answers
            this request about the images, then the record's question (None: the question directly).
    """

    def __init__(
        self,
        files: list[Path],
        image_folder: Path,
        tiling: Tiling,
        patches_per_tile: int,
        tokenizer: Tokenizer,
        image_token_id: int,
        max_tokens: int,
        blind: bool = False,
        prompts: bool = False,
        describe: str | None = None,
    ) -> None:
        self.files, self.image_folder = files, image_folder
        self.describe = describe
        self.tiling, self.patches_per_tile = tiling, patches_per_tile
        self.tokenizer, self.image_token_id = tokenizer, image_token_id
        self.blind = blind
        self.records: list[dict[str, Any]] = []
        self.images: list[list[tuple[Path, tuple[int, int]]]] = []  # per record: (path, (width, height))
        self.image_tokens: list[list[int]] = []
        self.lengths: list[int] = []
        sizes: dict[Path, tuple[int, int]] = {}
        for file in files:
            for k, record in enumerate(_read_records(file)):
                self._check(file, k, record, sizes, max_tokens, prompts)

    def _check(
        self,
        file: Path,
        k: int,
        record: Any,
        sizes: dict[Path, tuple[int, int]],
        max_tokens: int,
        prompts: bool,
    ) -> None:
        if not isinstance(record, dict):
            raise ConfigError(f"{file}: record #{k} must be an object, got {type(record).__name__}")
        name = str(record.get("id", f"#{k}"))
        record = {**record, "id": name}
        try:
            paths = image_paths(record)
            tags = count_image_tags(record)
        except ConfigError as exc:
            raise ConfigError(f"{file}: {exc}") from exc
        if tags != len(paths):
            raise ConfigError(f"{file}: record {name!r} has {tags} <image> tags but {len(paths)} images ({paths})")
        images, tokens = [], []
        for relative in paths:
            path = self.image_folder / relative
            if path not in sizes:
                sizes[path] = _image_size(path, file, name)
            try:
                tokens.append(self.tiling.num_tokens(*sizes[path], self.patches_per_tile))
            except ImageTooLargeError as exc:
                raise RecordImageTooLargeError(f"{file}: record {name!r}: image {path}: {exc}") from exc
            images.append((path, sizes[path]))
        try:
            ids, _ = encode_conversation(record, tokens, self.tokenizer, self.image_token_id)
            if prompts:
                self._encode_prompt(record, tokens)
        except ConfigError as exc:
            raise ConfigError(f"{file}: {exc}") from exc
        if len(ids) > max_tokens:
            raise ConfigError(
                f"{file}: record {name!r} has {len(ids)} tokens ({sum(tokens)} of them image tokens), more than "
                f"data.max_tokens={max_tokens}; raise data.max_tokens or lower data.max_tiles"
            )
        self.records.append(record)
        self.images.append(images)
        self.image_tokens.append(tokens)
        self.lengths.append(len(ids))

    def __len__(self) -> int:
        return len(self.records)

    def tiles(self, i: int) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """``(uint8 [n, 3, S, S], grids)``: the tiles of record ``i``'s images, in order."""
        pieces, grids = [], []
        for path, size in self.images[i]:
            if self.blind:
                image = Image.new("RGB", size, (BLANK, BLANK, BLANK))
            else:
                with Image.open(path) as handle:
                    image = handle.convert("RGB")
            tiles, grid = self.tiling(image)
            pieces.append(tiles)
            grids.append(grid)
        s = self.tiling.tile_size
        return (torch.cat(pieces) if pieces else torch.zeros((0, 3, s, s), dtype=torch.uint8)), grids

    def sample(self, i: int) -> dict[str, Any]:
        """Record ``i`` as a training sample: ``input_ids``, ``labels``, ``tiles``, ``grids``."""
        ids, labels = encode_conversation(self.records[i], self.image_tokens[i], self.tokenizer, self.image_token_id)
        tiles, grids = self.tiles(i)
        return {"input_ids": ids, "labels": labels, "tiles": tiles, "grids": grids}

    def _encode_prompt(self, record: dict[str, Any], tokens: list[int]) -> tuple[list[int], list[int] | None, str]:
        if self.describe is None:
            prompt, answer = encode_prompt(record, tokens, self.tokenizer, self.image_token_id)
            return prompt, None, answer
        return encode_described_prompt(record, tokens, self.tokenizer, self.image_token_id, self.describe)

    def prompt(self, i: int) -> dict[str, Any]:
        """Record ``i`` as a generation sample: ``prompt``, ``followup`` (describe-then-answer: the ids after the
        generated description, else None), ``described`` (whether the set is describe-then-answer), ``answer``,
        ``type`` (``"other"`` when the record has none), ``id``, ``tiles``, ``grids``."""
        record = self.records[i]
        prompt, followup, answer = self._encode_prompt(record, self.image_tokens[i])
        tiles, grids = self.tiles(i)
        kind = str(record.get("type", "other"))
        return {"prompt": prompt, "followup": followup, "described": self.describe is not None, "answer": answer,
                "type": kind, "id": record["id"], "tiles": tiles, "grids": grids}  # fmt: skip


def _read_records(file: Path) -> list[Any]:
    if not file.is_file():
        raise DatasetNotFoundError(f"the LLaVA JSON {file} does not exist")
    try:
        records = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file} is not valid JSON: {exc}") from exc
    if not isinstance(records, list):
        raise ConfigError(f"{file} must hold a JSON list of records, got {type(records).__name__}")
    return records


def _image_size(path: Path, file: Path, name: str) -> tuple[int, int]:
    if not path.is_file():
        raise DatasetNotFoundError(f"{file}: record {name!r}: image {path} does not exist")
    try:
        with Image.open(path) as handle:
            return handle.size
    except (OSError, UnidentifiedImageError) as exc:
        raise ConfigError(f"{file}: record {name!r}: image {path} cannot be read: {exc}") from exc


def _integer(value: Any, key: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"data.{key}={value!r} must be an integer ≥ {minimum}")
    return value


def _files(value: str | list[str] | None, key: str, required: bool) -> list[str]:
    if value is None:
        if required:
            raise ConfigError(f"data.{key} is required: a LLaVA JSON file (or a list of them)")
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items or not all(isinstance(v, str) and v for v in items):
        raise ConfigError(f"data.{key}={value!r} must be a path or a non-empty list of paths (or null)")
    return list(items)


@DATA.register("llava_json")
class LlavaDataModule(L.LightningDataModule):
    """LLaVA-format conversations with images, tiled as MiniMax-VL-01 does (:mod:`zoo.vision_language.tiling`).

    Loaders: ``train_dataloader`` / ``val_dataloader`` / ``test_dataloader`` give loss batches of their split
    (training: shuffled by ``seed`` and the epoch; validation/test in order; the val/test loaders are ``[]`` when
    their JSON is not given); :meth:`generation_dataloader` gives generation batches (``eval_collate``) of
    ``val`` or ``test``, ``batch_size`` prompts each (also ``predict_dataloader``: the test split). All loaders
    shard their batches across processes.

    Args:
        train_json / val_json / test_json: LLaVA JSON file(s) of each split (a path or a list; relative paths are
            taken as they are, i.e. from the working directory). Validation and test are optional.
        image_folder: the folder the records' image paths are relative to.
        tile_size / max_tiles / dynamic: the tiling (:class:`~zoo.vision_language.tiling.Tiling`), from the model.
        patch_size: the vision tower's patch side; ``patches_per_tile = (tile_size / patch_size)²``.
        image_token_id: the placeholder id of image tokens (≥ the tokenizer's 257 ids).
        batch_size: samples per batch of the padded loaders and prompts per generation batch.
        max_tokens: the longest sample allowed (checked at setup); with ``pack``, the length of a packed row.
        pack: loss batches are one row of whole samples up to ``max_tokens`` tokens with ``cu_seqlens`` (else
            ``batch_size`` samples, right-padded with eos).
        num_workers: loader worker processes.
        seed: seed of the training packing and order.
        blind: replace every image by a blank grey image of its size (a baseline that cannot see; the same
            sequence lengths).
        stage: ``align`` or ``instruct``: for ``llava_json`` informational only (kept in the hyperparameters;
            give the stage's files in ``train_json``); ``copy_paste_vqa`` chooses its training records by it.
        describe_prompt: describe-then-answer generation: the model first answers this request about the images
            (e.g. ``"Describe the image."``), then the question with its description in context
            (:func:`~tasks.data.vlm.conversation.encode_described_prompt`); null: the question directly. Train on
            records that hold the request as their first turn.

    After :meth:`setup`: ``sets`` (``{"train" | "val" | "test": LlavaSet}`` of the loss batches),
    ``eval_sets`` (the generation sets), ``tiling``, ``patches_per_tile``, ``tokenizer``, ``vocab_size``.
    """

    vocab_size: int = 258  # 257 byte ids + the default image_token_id (``${zoo.data:vocab_size}``)

    def __init__(
        self,
        train_json: str | list[str] | None = None,
        val_json: str | list[str] | None = None,
        test_json: str | list[str] | None = None,
        image_folder: str = ".",
        tile_size: int = 336,
        max_tiles: int = 9,
        dynamic: bool = True,
        patch_size: int = 14,
        image_token_id: int = 257,
        batch_size: int = 8,
        max_tokens: int = 4096,
        pack: bool = True,
        num_workers: int = 0,
        seed: int = 0,
        blind: bool = False,
        stage: str = "instruct",
        describe_prompt: str | None = None,
    ) -> None:
        super().__init__()
        if type(self) is LlavaDataModule:  # a subclass saves its own arguments
            self.save_hyperparameters()
        if stage not in STAGES:
            raise ConfigError(f"data.stage={stage!r} is not a stage. Valid choices: {', '.join(STAGES)}.")
        for key, value, minimum in (
            ("tile_size", tile_size, 1),
            ("max_tiles", max_tiles, 1),
            ("patch_size", patch_size, 1),
            ("batch_size", batch_size, 1),
            ("max_tokens", max_tokens, 1),
            ("num_workers", num_workers, 0),
        ):
            _integer(value, key, minimum)
        if tile_size % patch_size:
            raise ConfigError(f"data.tile_size={tile_size} must be a multiple of data.patch_size={patch_size}")
        self.tokenizer: Tokenizer = ByteTokenizer()
        if isinstance(image_token_id, bool) or not isinstance(image_token_id, int) or image_token_id < 0:
            raise ConfigError(f"data.image_token_id={image_token_id!r} must be an integer id")
        if image_token_id < self.tokenizer.vocab_size:
            raise ConfigError(
                f"data.image_token_id={image_token_id} collides with the byte tokenizer's ids 0..256 "
                f"(eos {self.tokenizer.eos_id}); use an id ≥ {self.tokenizer.vocab_size}"
            )
        self.json = {
            "train": _files(train_json, "train_json", required=type(self) is LlavaDataModule),
            "val": _files(val_json, "val_json", required=False),
            "test": _files(test_json, "test_json", required=False),
        }
        self.image_folder = image_folder
        self.tiling = Tiling(tile_size, max_tiles, bool(dynamic))
        self.patch_size = patch_size
        self.patches_per_tile = (tile_size // patch_size) ** 2
        self.image_token_id = image_token_id
        self.vocab_size = max(self.tokenizer.vocab_size, image_token_id + 1)
        self.batch_size, self.max_tokens, self.pack = batch_size, max_tokens, bool(pack)
        self.num_workers, self.seed = num_workers, seed
        self.blind, self.stage = bool(blind), stage
        if describe_prompt is not None and (not isinstance(describe_prompt, str) or not describe_prompt.strip()):
            raise ConfigError(f"data.describe_prompt={describe_prompt!r} must be a non-empty string or null")
        self.describe_prompt = describe_prompt
        self.sets: dict[str, LlavaSet] = {}
        self.eval_sets: dict[str, LlavaSet] = {}

    # ------------------------------------------------------------------ files (copy_paste_vqa overrides these)
    def folder(self) -> Path:
        """The folder of the images."""
        return Path(self.image_folder).expanduser()

    def loss_files(self) -> dict[str, list[Path]]:
        """``{split: JSON files}`` of the loss batches (splits without files are left out)."""
        return {split: [Path(f).expanduser() for f in files] for split, files in self.json.items() if files}

    def eval_files(self) -> dict[str, list[Path]]:
        """``{"val" | "test": JSON files}`` of the generation batches: the loss files of those splits."""
        return {split: files for split, files in self.loss_files().items() if split != "train"}

    # ------------------------------------------------------------------ Lightning hooks
    def setup(self, stage: str | None = None) -> None:
        """Read and check every record of every split (once)."""
        if self.sets:
            return
        folder = self.folder()
        if not folder.is_dir():
            raise DatasetNotFoundError(f"data.image_folder={self.image_folder!r}: {folder} is not a folder")
        built: dict[tuple[tuple[Path, ...], bool], LlavaSet] = {}

        def make(files: list[Path], prompts: bool) -> LlavaSet:
            key = (tuple(files), prompts)
            if key not in built:
                built[key] = LlavaSet(
                    files, folder, self.tiling, self.patches_per_tile, self.tokenizer, self.image_token_id,
                    self.max_tokens, self.blind, prompts, self.describe_prompt if prompts else None,
                )  # fmt: skip
            return built[key]

        eval_files = self.eval_files()
        self.eval_sets = {split: make(files, True) for split, files in eval_files.items()}
        self.sets = {
            split: make(files, eval_files.get(split) == files) for split, files in self.loss_files().items()
        }  # (a split whose generation set is the same files shares its LlavaSet)
        if not self.sets.get("train"):
            raise ConfigError(f"data.train_json ({self.sets['train'].files}) holds no records")
        sizes = ", ".join(f"{split} {len(s)}" for split, s in self.sets.items())
        log.info(
            "%s: %s records (%s stage); %d tokens per tile%s",
            type(self).__name__,
            sizes,
            self.stage,
            self.patches_per_tile,
            ", blind" if self.blind else "",
        )

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def _require(self, split: str, sets: dict[str, LlavaSet]) -> LlavaSet | None:
        if not self.sets:
            raise RuntimeError(f"{type(self).__name__}.setup() has not run")
        return sets.get(split)

    def _loss_loader(self, split: str, train: bool) -> DataLoader | list:
        dataset = self._require(split, self.sets)
        if dataset is None:
            return []
        world, rank = self._world()
        sampler = RowSampler(
            dataset.lengths, max_tokens=self.max_tokens if self.pack else None, batch_size=self.batch_size,
            shuffle=train, seed=self.seed, drop_last=train, num_replicas=world, rank=rank, even=not train,
        )  # fmt: skip
        if train and len(sampler) == 0:
            raise ConfigError(
                f"the training split ({len(dataset)} records) gives no full batch per process "
                f"(data.batch_size={self.batch_size}, {world} processes)"
            )
        return self._loader(
            ResumableLoader if train else DataLoader, Rows(dataset.sample, len(dataset)), sampler,
            Collate(self.pack, self.tokenizer.eos_id),
        )  # fmt: skip

    def _loader(self, cls: type[DataLoader], rows: Rows, sampler: RowSampler, collate: Any) -> DataLoader:
        return cls(
            rows,
            batch_size=None,
            sampler=sampler,
            collate_fn=collate,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loss_loader("train", train=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loss_loader("val", train=False)

    def test_dataloader(self) -> DataLoader | list:
        return self._loss_loader("test", train=False)

    def generation_dataloader(self, split: str = "val") -> DataLoader | list:
        """Generation batches (:func:`~tasks.data.vlm.collate.eval_collate`) of ``val`` or ``test``, in order,
        ``batch_size`` prompts each; ``[]`` when the split has no JSON."""
        if split not in ("val", "test"):
            raise ConfigError(f"generation split {split!r} is not one of ('val', 'test')")
        dataset = self._require(split, self.eval_sets)
        if dataset is None:
            return []
        world, rank = self._world()
        sampler = RowSampler(
            dataset.lengths, max_tokens=None, batch_size=self.batch_size, shuffle=False, seed=self.seed,
            drop_last=False, num_replicas=world, rank=rank,
        )  # fmt: skip
        return self._loader(DataLoader, Rows(dataset.prompt, len(dataset)), sampler, eval_collate)

    def predict_dataloader(self) -> DataLoader | list:
        return self.generation_dataloader("test")


@DATA.register("copy_paste_vqa")
class CopyPasteVQADataModule(LlavaDataModule):
    """The generated VQA set of :mod:`tasks.data.vlm.copy_paste_vqa`, generated on the first ``prepare_data()``
    (or ``setup()``) and read as LLaVA JSON.

    ``root`` defaults to ``~/.cache/zoo/copy_paste_vqa/<hash of the settings>`` (``$ZOO_CACHE`` replaces
    ``~/.cache/zoo``). The stage chooses the loss records of every split: ``align`` the captions, ``instruct`` the
    questions (``multi_turn``: one multi-turn record per image); generation batches are always single questions
    (``type`` one of :data:`~tasks.data.vlm.copy_paste_vqa.QUESTION_TYPES`). See :class:`LlavaDataModule` for the
    other arguments.

    Args:
        root: the folder to generate into (null: the cache folder above).
        image_size: side of the square images.
        train_images / val_images / test_images: images per split (each gives a caption and 2–5 questions).
        seed: seed of the generation and of the training order.
        multi_turn: instruct-stage loss records (every split): per image ONE record with all its questions as
            consecutive turns (the image is encoded once for 2–5 answers); false: one record per question.
            Generation batches are single questions either way.
        describe_first: describe, then answer: the instruct loss records are the ``described`` dialogs (per image
            the caption turn first, then its questions; needs ``multi_turn``), and generation asks each question
            after the model's own caption (``describe_prompt`` = ``Describe the image.``).
        instruct_captions: the caption records join the instruct loss records.
        background / scale / layout / max_objects: the scenes' background style, object size range, placement
            (``scattered``: apart and whole; ``overlap``: the detection set's occluding piles) and most objects
            (:func:`~tasks.data.vlm.copy_paste_vqa.compose`).
        categories: the object names pasted (null: all sixteen, :data:`~tasks.data.vlm.copy_paste_vqa.NAMES`).
        heldout_objects: val / test paste objects never seen in training (unseen Fashion-MNIST garments and emoji);
            false: the training objects in new scenes.
        presence_questions: presence questions per image (distinct names, yes and no alternating).
        tint: the garments' colours: ``random`` (any hue) or ``category`` (each garment class its own hue).
    """

    def __init__(
        self,
        root: str | None = None,
        image_size: int = 64,
        train_images: int = 2000,
        val_images: int = 200,
        test_images: int = 200,
        seed: int = 0,
        tile_size: int = 32,
        max_tiles: int = 4,
        dynamic: bool = True,
        patch_size: int = 8,
        image_token_id: int = 257,
        batch_size: int = 16,
        max_tokens: int = 1024,
        pack: bool = True,
        num_workers: int = 0,
        blind: bool = False,
        stage: str = "instruct",
        multi_turn: bool = True,
        instruct_captions: bool = False,
        describe_first: bool = False,
        background: str = copy_paste_vqa.BACKGROUND,
        scale: tuple[float, float] | list[float] = copy_paste_vqa.SCALE,
        layout: str = copy_paste_vqa.LAYOUT,
        max_objects: int = copy_paste_vqa.MAX_OBJECTS,
        categories: list[str] | None = None,
        heldout_objects: bool = copy_paste_vqa.HELDOUT_OBJECTS,
        presence_questions: int = copy_paste_vqa.PRESENCE_QUESTIONS,
        tint: str = copy_paste_vqa.TINT,
    ) -> None:
        for key, value, minimum in (
            ("image_size", image_size, 32),
            ("train_images", train_images, 1),
            ("val_images", val_images, 1),
            ("test_images", test_images, 1),
            ("max_objects", max_objects, 1),
            ("presence_questions", presence_questions, 1),
        ):
            _integer(value, key, minimum)
        self.counts = {"train": train_images, "val": val_images, "test": test_images}
        self.image_size = image_size
        if background not in copy_paste_vqa.BACKGROUNDS:
            raise ConfigError(f"data.background={background!r} must be one of {copy_paste_vqa.BACKGROUNDS}")
        if layout not in copy_paste_vqa.LAYOUTS:
            raise ConfigError(f"data.layout={layout!r} must be one of {copy_paste_vqa.LAYOUTS}")
        try:
            self.scale = copy_paste_vqa._scale(scale)
        except ConfigError as exc:
            raise ConfigError(f"data.{exc}") from None
        self.background, self.multi_turn = background, bool(multi_turn)
        self.instruct_captions, self.describe_first = bool(instruct_captions), bool(describe_first)
        if self.describe_first and not self.multi_turn:
            raise ConfigError("data.describe_first=true trains on one dialog per image (caption, then questions): "
                              "it needs data.multi_turn=true")  # fmt: skip
        self.layout, self.max_objects = layout, max_objects
        try:
            if isinstance(categories, Sequence) and not isinstance(categories, str):
                categories = list(categories)  # e.g. an omegaconf ListConfig
            self.categories = copy_paste_vqa.check_categories(categories)
            self.tint = copy_paste.check_tint(tint)
        except ConfigError as exc:
            raise ConfigError(f"data.{exc}") from None
        self.heldout_objects, self.presence_questions = bool(heldout_objects), presence_questions
        settings = copy_paste_vqa.settings(
            train_images, val_images, test_images, image_size, seed, background=background, scale=self.scale,
            layout=layout, max_objects=max_objects, categories=self.categories, heldout_objects=self.heldout_objects,
            presence_questions=presence_questions, tint=tint,
        )  # fmt: skip
        self.settings_hash = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
        directory = root  # `root` itself stays as given (the saved hyperparameter; None: this hash)
        if directory is None:
            cache = Path(os.environ.get("ZOO_CACHE", "~/.cache/zoo")).expanduser()
            directory = str(cache / "copy_paste_vqa" / self.settings_hash)
        self.root = directory
        super().__init__(
            image_folder=directory, tile_size=tile_size, max_tiles=max_tiles, dynamic=dynamic, patch_size=patch_size,
            image_token_id=image_token_id, batch_size=batch_size, max_tokens=max_tokens, pack=pack,
            num_workers=num_workers, seed=seed, blind=blind, stage=stage,
            describe_prompt=copy_paste_vqa.CAPTION_PROMPT if self.describe_first else None,
        )  # fmt: skip
        self.save_hyperparameters()

    def loss_files(self) -> dict[str, list[Path]]:
        if self.stage == "align":
            kinds = ["captions"]
        else:
            questions = "described" if self.describe_first else "dialogs" if self.multi_turn else "vqa"
            kinds = [questions] + (["captions"] if self.instruct_captions else [])
        return {split: [copy_paste_vqa.split_paths(self.root, split)[k] for k in kinds] for split in SPLITS}

    def eval_files(self) -> dict[str, list[Path]]:
        return {split: [copy_paste_vqa.split_paths(self.root, split)["vqa"]] for split in ("val", "test")}

    def prepare_data(self) -> None:
        """Generate the splits not generated yet (test, val, then train)."""
        missing = [s for s in ("test", "val", "train") if not copy_paste_vqa.is_complete(self.root, s)]
        if missing:
            log.info("generating the copy-paste VQA set (%s) in %s", ", ".join(missing), self.root)
        for split in missing:
            copy_paste_vqa.generate_split(
                self.root, split, self.counts[split], size=self.image_size, seed=self.seed,
                background=self.background, scale=self.scale, layout=self.layout, max_objects=self.max_objects,
                categories=self.categories, heldout_objects=self.heldout_objects,
                presence_questions=self.presence_questions, tint=self.tint,
            )  # fmt: skip

    def setup(self, stage: str | None = None) -> None:
        if not all(copy_paste_vqa.is_complete(self.root, s) for s in SPLITS):
            self.prepare_data()  # e.g. used without a Trainer
        super().setup(stage)
