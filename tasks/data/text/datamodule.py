"""The ``text_files`` DataModule: configuration checks, then reading → tokenising (cached) → packed loaders."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from tasks.data.text.packing import EvalWindows, PackedCollate, TrainWindows
from tasks.data.text.reading import (
    FORMAT_CHOICES,
    Document,
    cap_documents,
    expand_globs,
    read_documents,
    split_by_document,
    stdlib_files,
    stdlib_root,
)
from tasks.data.text.sampling import ResumableLoader, WindowSampler
from tasks.data.text.tokenising import (
    CACHE_VERSION,
    TOKENIZER_CHOICES,
    TokenStream,
    cache_root,
    cached_streams,
    digest,
    file_stat,
    make_tokenizer,
)
from tasks.data.tokenizer import Tokenizer, tokenizer_from_json
from zoo.errors import ConfigError, DatasetNotFoundError
from zoo.registries import DATA

log = logging.getLogger(__name__)


def _positive(value: Any, key: str, *, optional: bool = False, minimum: int = 1) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"data.{key}={value!r} must be an integer ≥ {minimum}{' or null' if optional else ''}")


@DATA.register("text_files")
class TextDataModule(L.LightningDataModule):
    """Language-model pretraining data from text files (one document per file) or JSON lines (one per line).

    With no ``files``, the corpus is the running Python's standard library (``*.py`` under
    ``sysconfig.get_paths()["stdlib"]``, without ``site-packages``, ``test/``, ``idlelib/``, ``lib2to3/`` and
    ``turtledemo/``): about 620 files, 11 MB on CPython 3.11, always present.

    Args:
        files: glob(s) of the corpus (``**`` recurses); None: the standard library.
        val_files: glob(s) of the validation documents; otherwise ``val_fraction`` of the ``files`` documents.
        test_files: glob(s) of the test documents; otherwise ``test_fraction`` of them.
        format: ``text`` (a file is a document) or ``jsonl`` (a line's JSON object is a document).
        text_field: the key holding the text in ``jsonl`` records.
        tokenizer: ``byte`` (UTF-8 bytes + EOS, 257 ids) or ``bpe`` (byte-level BPE trained on the training split).
        vocab_size: the model's id space: at least 257 for ``byte`` (larger leaves unused ids); the size of the BPE
            to train for ``bpe``.
        seq_len: tokens per row (each row has ``seq_len`` inputs and ``seq_len`` labels).
        batch_size: training rows per batch and process.
        eval_batch_size: validation/test rows per batch (default: ``batch_size``).
        num_workers: loader worker processes.
        val_fraction: share of the documents held out for validation (without ``val_files``); at least one.
        test_fraction: share held out for test (without ``test_files``); at least one.
        max_docs: use only the first documents of each source (``files`` before splitting, ``val_files``,
            ``test_files``), in sorted order: for tests and quick runs.
        max_chars: use only this many characters of each source (the last document cut).
        cache_dir: where token streams and trained tokenizers are cached (default ``~/.cache/zoo/text``, or
            ``$XDG_CACHE_HOME/zoo/text``).
        split_seed: seed of the document split.
        seed: seed of the training windows (the epoch's shift and order use ``seed + epoch``).
        eval_windows: use at most this many validation/test windows, evenly spread (for fast runs).

    After :meth:`setup`: ``tokenizer``, ``vocab_size``, ``streams`` (``{"train" | "val" | "test": TokenStream}``)
    and ``train_set`` / ``val_set`` / ``test_set``. The tokenizer is the datamodule's state (``state_dict``), so
    every checkpoint carries it; it is also written as ``tokenizer.json`` beside the checkpoints.
    """

    vocab_size: int = 257  # the configured id space (``${zoo.data:vocab_size}`` falls back to it)
    fixed_arguments: tuple[str, ...] = ()  # arguments a subclass fixes (left out of its hyperparameters)

    def __init__(
        self,
        files: str | list[str] | None = None,
        val_files: str | list[str] | None = None,
        test_files: str | list[str] | None = None,
        format: str = "text",
        text_field: str = "text",
        tokenizer: str = "byte",
        vocab_size: int = 257,
        seq_len: int = 256,
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        val_fraction: float = 0.05,
        test_fraction: float = 0.05,
        max_docs: int | None = None,
        max_chars: int | None = None,
        cache_dir: str | None = None,
        split_seed: int = 0,
        seed: int = 0,
        eval_windows: int | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=list(self.fixed_arguments))
        if tokenizer not in TOKENIZER_CHOICES:
            raise ConfigError(
                f"data.tokenizer={tokenizer!r} is not a tokenizer. Valid choices: {', '.join(TOKENIZER_CHOICES)}."
            )
        if format not in FORMAT_CHOICES:
            raise ConfigError(f"data.format={format!r} is not a format. Valid choices: {', '.join(FORMAT_CHOICES)}.")
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 257:
            raise ConfigError(
                f"data.vocab_size={vocab_size!r} is too small: the {tokenizer} tokenizer needs at least 257 ids "
                f"(256 bytes + EOS)"
            )
        for key, count in (("seq_len", seq_len), ("batch_size", batch_size)):
            _positive(count, key)
        for key, cap in (("eval_batch_size", eval_batch_size), ("max_docs", max_docs), ("max_chars", max_chars)):
            _positive(cap, key, optional=True)
        _positive(eval_windows, "eval_windows", optional=True)
        _positive(num_workers, "num_workers", minimum=0)
        for key, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
                raise ConfigError(f"data.{key}={fraction!r} must be a fraction in [0, 1)")
        if val_fraction + test_fraction >= 1:
            raise ConfigError(
                f"data.val_fraction + data.test_fraction = {val_fraction + test_fraction} leaves no training data"
            )
        for key, globs in (("files", files), ("val_files", val_files), ("test_files", test_files)):
            if globs is not None and not (
                (isinstance(globs, str) and globs) or (isinstance(globs, (list, tuple)) and globs)
            ):
                raise ConfigError(f"data.{key}={globs!r} must be a glob or a non-empty list of globs (or null)")
        self.files = files
        self.val_files = val_files
        self.test_files = test_files
        self.format = format
        self.text_field = text_field
        self.tokenizer_kind = tokenizer
        self.vocab_size = vocab_size
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.max_docs = max_docs
        self.max_chars = max_chars
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else cache_root() / "text"
        self.split_seed = split_seed
        self.seed = seed
        self.eval_windows = eval_windows
        self.tokenizer: Tokenizer | None = None
        self.streams: dict[str, TokenStream] = {}
        self.train_set: TrainWindows | None = None
        self.val_set: EvalWindows | None = None
        self.test_set: EvalWindows | None = None
        self._saved_to: set[str] = set()

    # ------------------------------------------------------------------ documents (subclasses override these)
    def _sources(self) -> dict[str, list[Path]]:
        """The files of each configured source: ``files`` (the stdlib when None), ``val_files``, ``test_files``."""
        sources = {"files": stdlib_files() if self.files is None else expand_globs(self.files, "files")}
        for key in ("val_files", "test_files"):
            value = getattr(self, key)
            if value is not None:
                sources[key] = expand_globs(value, key)
        held_out = set(sources.get("val_files", [])) | set(sources.get("test_files", []))
        sources["files"] = [p for p in sources["files"] if p not in held_out]
        if not sources["files"]:
            raise DatasetNotFoundError(f"data.files={self.files!r} matches only validation/test files")
        return sources

    def source_signature(self) -> dict[str, Any]:
        """What determines the documents of every split (JSON-able; hashed into the cache keys)."""
        sources = self._sources()
        return {
            "sources": {key: [file_stat(p) for p in paths] for key, paths in sources.items()},
            "stdlib": sys.version if self.files is None else None,
            "format": self.format,
            "text_field": self.text_field if self.format == "jsonl" else None,
            "caps": [self.max_docs, self.max_chars],
            "split": [self.val_fraction, self.test_fraction, self.split_seed],
        }

    def load_documents(self) -> dict[str, list[Document]]:
        """``{"train": [...], "val": [...], "test": [...]}`` documents."""
        sources = self._sources()
        every = [p for paths in sources.values() for p in paths]
        base = stdlib_root() if self.files is None else Path(os.path.commonpath([p.parent for p in every]))

        def read(key: str) -> list[Document]:
            paths = sources[key]
            if self.max_docs is not None and self.format == "text":
                paths = paths[: self.max_docs]
            return self.cap(read_documents(paths, self.format, self.text_field, base))

        train, val, test = split_by_document(
            read("files"),
            0.0 if "val_files" in sources else self.val_fraction,
            0.0 if "test_files" in sources else self.test_fraction,
            self.split_seed,
        )
        if "val_files" in sources:
            val = read("val_files")
        if "test_files" in sources:
            test = read("test_files")
        return {"train": train, "val": val, "test": test}

    def cap(self, docs: list[Document]) -> list[Document]:
        """``max_docs`` / ``max_chars`` applied to one source."""
        return cap_documents(docs, self.max_docs, self.max_chars)

    # ------------------------------------------------------------------ tokenizer and token streams
    def _check_tokenizer(self, tokenizer: Tokenizer) -> None:
        if tokenizer.vocab_size > self.vocab_size:
            raise ConfigError(
                f"data.vocab_size={self.vocab_size} is smaller than the tokenizer's {tokenizer.vocab_size} ids"
            )
        if tokenizer.kind == "bpe" and tokenizer.vocab_size < self.vocab_size:
            log.warning(
                "the BPE has %d ids, fewer than data.vocab_size=%d (the corpus has no more merges); the model's "
                "embedding keeps %d rows",
                tokenizer.vocab_size,
                self.vocab_size,
                self.vocab_size,
            )

    def _build(self) -> None:
        """Tokenizer and token streams from the cache, or computed (and cached)."""
        docs_key = digest([type(self).__qualname__, self.source_signature(), CACHE_VERSION])
        memo: dict[str, dict[str, list[Document]]] = {}

        def documents() -> dict[str, list[Document]]:
            if "docs" not in memo:
                memo["docs"] = self.load_documents()
            return memo["docs"]

        if self.tokenizer is None:  # not restored from a checkpoint already
            self.tokenizer = make_tokenizer(
                self.tokenizer_kind, self.vocab_size, self.cache_dir, docs_key, lambda: documents()["train"]
            )
        self._check_tokenizer(self.tokenizer)
        self.streams = cached_streams(self.tokenizer, self.cache_dir, docs_key, documents)
        train = self.streams["train"]
        if len(train) <= self.seq_len:
            raise ConfigError(
                f"the training split has {len(train)} tokens, not more than data.seq_len={self.seq_len}; "
                f"lower data.seq_len or give more text"
            )
        self.train_set = TrainWindows(train.tokens, self.seq_len)
        self.val_set = EvalWindows(self.streams["val"].tokens, self.seq_len, self.eval_windows)
        self.test_set = EvalWindows(self.streams["test"].tokens, self.seq_len, self.eval_windows)
        sizes = ", ".join(
            f"{s} {self.streams[s].num_docs} docs / {len(self.streams[s]):,} tokens ({len(w)} windows)"
            for s, w in (("train", self.train_set), ("val", self.val_set), ("test", self.test_set))
        )
        log.info("%s: %s; tokenizer %r", type(self).__name__, sizes, self.tokenizer)
        for split, dataset in (("val", self.val_set), ("test", self.test_set)):
            if len(dataset) == 0:
                log.warning(
                    "the %s split (%d documents, %d tokens) has no window of data.seq_len=%d tokens, so its loader is "
                    "empty: give data.%s_files, more documents or a larger data.%s_fraction",
                    split,
                    self.streams[split].num_docs,
                    len(self.streams[split]),
                    self.seq_len,
                    split,
                    split,
                )

    # ------------------------------------------------------------------ Lightning hooks
    def prepare_data(self) -> None:
        """Fill the cache once per node (other processes then read it in :meth:`setup`)."""
        if self.train_set is None:
            self._build()

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self._build()

    def _save_tokenizer(self) -> None:
        """Write ``tokenizer.json`` beside the checkpoints (the checkpoint callback's folder, else the log folder).
        Called when fit asks for its loader: after the callbacks' setup, whose checkpoint callback would otherwise
        warn about a non-empty folder."""
        trainer = self.trainer
        if trainer is None or self.tokenizer is None:
            return
        callback = trainer.checkpoint_callback
        directory = getattr(callback, "dirpath", None)
        if directory is None and trainer.loggers:
            directory = trainer.log_dir  # (a collective call under DDP: every rank gets here)
        if directory is None or not trainer.is_global_zero:
            return
        path = str(self.tokenizer.save(directory))
        if path not in self._saved_to:
            log.info("tokenizer saved to %s", path)
            self._saved_to.add(path)

    def state_dict(self) -> dict[str, Any]:
        """``{"tokenizer": <JSON>}``: Lightning stores it in every checkpoint under this class's name."""
        return {"tokenizer": self.tokenizer.to_json()} if self.tokenizer is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Adopt a checkpoint's tokenizer; data already tokenized with another one is tokenized again."""
        text = state_dict.get("tokenizer")
        if not text:
            return
        restored = tokenizer_from_json(text)
        if restored == self.tokenizer:
            return
        self._check_tokenizer(restored)
        built = self.train_set is not None
        if self.tokenizer is not None:
            log.warning("the checkpoint's tokenizer differs from this run's; using the checkpoint's")
        self.tokenizer = restored
        if built:
            self.train_set = None
            self._build()
            self._save_tokenizer()

    # ------------------------------------------------------------------ loaders
    def train_dataloader(self) -> DataLoader:
        dataset = self._require(self.train_set)
        self._save_tokenizer()
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        sampler = WindowSampler(len(dataset.tokens), self.seq_len, world, rank, self.seed)
        if len(sampler) < self.batch_size:
            raise ConfigError(
                f"the training split has {len(sampler)} windows of data.seq_len={self.seq_len} tokens per process, "
                f"fewer than data.batch_size={self.batch_size}"
            )
        return self._loader(dataset, self.batch_size, sampler=sampler, drop_last=True, loader_class=ResumableLoader)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._require(self.val_set), self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._require(self.test_set), self.eval_batch_size)

    def _require(self, dataset: Dataset | None) -> Any:
        if dataset is None or self.tokenizer is None:
            raise RuntimeError(f"{type(self).__name__}.setup() has not run")
        return dataset

    def _loader(
        self, dataset: Dataset, batch_size: int, loader_class: type[DataLoader] = DataLoader, **kwargs: Any
    ) -> DataLoader:
        assert self.tokenizer is not None
        if self.num_workers:  # workers do not tokenize; keep HF tokenizers from warning about the fork
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        return loader_class(
            dataset,
            batch_size=batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=PackedCollate(self.tokenizer.eos_id),
            pin_memory=torch.cuda.is_available(),
            **kwargs,
        )
