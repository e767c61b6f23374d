"""Text corpora for language-model pretraining: documents → one token stream per split → packed windows.

Every document is tokenized and followed by the tokenizer's EOS id; a split is one token array (``uint16`` when the
vocabulary fits, else ``int32``) plus the offsets where its documents start. Training draws windows of
``seq_len + 1`` tokens at offsets that change every epoch; validation and test read consecutive, non-overlapping
windows. A window may span several documents: the batch's ``cu_seqlens`` restarts attention at each of them.

Batches are dicts::

    input_ids   int64 [B, T]    T = seq_len
    labels      int64 [B, T]    the next token; -100 where the input is EOS (the next document's first token
                                cannot be predicted from this one), so the last token of a document predicts EOS
    cu_seqlens  int32 [N + 1]   segment offsets over the flattened B·T tokens: 0, every row start, every token
                                after an EOS, and B·T (strictly increasing)
    num_tokens  int             labels that are not -100

The training loader is resumable: Lightning stores its position (epoch, batches) in every checkpoint, and a run
resumed mid-epoch trains on exactly the batches of an uninterrupted one (also across processes under DDP).

Tokenized streams and trained tokenizers are cached under ``cache_dir`` (default ``~/.cache/zoo/text``), keyed by
the settings and the files' paths, sizes and modification times.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import sys
import sysconfig
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from tasks.data.tokenizer import BPETokenizer, ByteTokenizer, Tokenizer, tokenizer_from_json
from zoo.errors import ConfigError, DatasetNotFoundError
from zoo.io import atomic_write
from zoo.registries import DATA

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
SPLITS = ("train", "val", "test")
TOKENIZER_CHOICES = ("byte", "bpe")
FORMAT_CHOICES = ("text", "jsonl")
# Folders of the standard library left out of the default corpus: tests, the IDLE editor, 2to3's fixers, demos.
STDLIB_EXCLUDED = frozenset(
    {"site-packages", "dist-packages", "test", "idlelib", "lib2to3", "turtledemo", "__pycache__"}
)
CACHE_VERSION = 1


def cache_root() -> Path:
    """The zoo's cache folder: ``$XDG_CACHE_HOME/zoo`` or ``~/.cache/zoo``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "zoo"


@dataclass(frozen=True)
class Document:
    """One document: ``name`` identifies it stably (a relative path, ``path:line`` for jsonl), for the split."""

    name: str
    text: str


@dataclass
class TokenStream:
    """A split's documents as one token array, each followed by EOS; ``doc_starts`` are the documents' offsets."""

    tokens: np.ndarray
    doc_starts: np.ndarray

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def num_docs(self) -> int:
        return len(self.doc_starts)


# ------------------------------------------------------------------------------------------------- corpora
def stdlib_root() -> Path:
    """The running interpreter's standard-library folder."""
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files() -> list[Path]:
    """The ``.py`` files of the standard library, sorted, without ``site-packages``, tests, ``idlelib``, ``lib2to3``
    and ``turtledemo``."""
    root = stdlib_root()
    found: list[Path] = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if d not in STDLIB_EXCLUDED)
        found.extend(Path(folder) / name for name in names if name.endswith(".py"))
    return sorted(found)


def expand_globs(patterns: str | Sequence[str], key: str) -> list[Path]:
    """The files matching ``patterns`` (``**`` recurses, ``~`` expands), sorted and without duplicates.

    Raises:
        DatasetNotFoundError: a pattern that matches no file (named with its config key).
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    found: set[Path] = set()
    for pattern in patterns:
        matches = [Path(p) for p in glob.glob(os.path.expanduser(str(pattern)), recursive=True)]
        files = [p for p in matches if p.is_file()]
        if not files:
            hint = f" ({pattern} is a folder: use {pattern.rstrip('/')}/**/*.txt or similar)" if matches else ""
            raise DatasetNotFoundError(f"data.{key}: no files match {pattern!r}{hint}")
        found.update(p.resolve() for p in files)
    return sorted(found)


def read_documents(paths: Sequence[Path], fmt: str, text_field: str, base: Path | None = None) -> list[Document]:
    """The documents of ``paths``: one per file (``fmt="text"``) or one per line of JSON (``"jsonl"``).

    Names are the paths relative to ``base`` (``path:line`` for jsonl). Files are read as UTF-8, undecodable bytes
    replaced.
    """
    docs = []
    for path in paths:
        name = path.as_posix()
        if base is not None and path.is_relative_to(base):
            name = path.relative_to(base).as_posix()
        text = path.read_text(encoding="utf-8", errors="replace")
        if fmt == "text":
            docs.append(Document(name, text))
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"data.format=jsonl, but line {number} of {path} is not JSON: {exc}") from exc
            if not isinstance(record, dict) or text_field not in record:
                keys = ", ".join(record) if isinstance(record, dict) else type(record).__name__
                raise ConfigError(
                    f"data.text_field={text_field!r} is not a key of line {number} of {path} (it has: {keys})"
                )
            value = record[text_field]
            docs.append(Document(f"{name}:{number}", value if isinstance(value, str) else json.dumps(value)))
    return docs


def cap_documents(docs: list[Document], max_docs: int | None, max_chars: int | None) -> list[Document]:
    """The first ``max_docs`` documents, then cut after ``max_chars`` characters in all (the last one truncated)."""
    if max_docs is not None:
        docs = docs[:max_docs]
    if max_chars is not None:
        kept, total = [], 0
        for doc in docs:
            if total >= max_chars:
                break
            text = doc.text[: max_chars - total]
            kept.append(doc if len(text) == len(doc.text) else Document(doc.name, text))
            total += len(text)
        docs = kept
    return docs


def _split_count(fraction: float, n: int) -> int:
    return 0 if fraction <= 0 else max(1, round(fraction * n))


def split_by_document(
    docs: list[Document], val_fraction: float, test_fraction: float, seed: int
) -> tuple[list[Document], list[Document], list[Document]]:
    """A seeded split by document: (train, val, test), each in the input's order.

    Documents are ranked by a hash of ``seed`` and their name (so adding a file moves no other); the first
    ``val_fraction`` go to validation, the next ``test_fraction`` to test. Each non-zero fraction gets at least one
    document as long as training keeps one.
    """
    n = len(docs)
    n_val, n_test = _split_count(val_fraction, n), _split_count(test_fraction, n)
    while n_val + n_test >= n and n_val + n_test > 0:  # training keeps at least one document
        if n_test >= n_val:
            n_test -= 1
        else:
            n_val -= 1
    rank = sorted(range(n), key=lambda i: hashlib.sha256(f"{seed}\0{docs[i].name}".encode()).digest())
    val_idx, test_idx = set(rank[:n_val]), set(rank[n_val : n_val + n_test])
    train = [d for i, d in enumerate(docs) if i not in val_idx and i not in test_idx]
    return train, [d for i, d in enumerate(docs) if i in val_idx], [d for i, d in enumerate(docs) if i in test_idx]


def tokenize_documents(tokenizer: Tokenizer, docs: Sequence[Document], chunk: int = 256) -> TokenStream:
    """Encode ``docs`` into one stream, EOS after each; documents with no tokens are left out."""
    dtype = np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.int32
    pieces, starts, offset = [], [], 0
    eos = np.asarray([tokenizer.eos_id], dtype=dtype)
    for first in range(0, len(docs), chunk):
        for ids in tokenizer.encode_batch([d.text for d in docs[first : first + chunk]]):
            if len(ids) == 0:
                continue
            starts.append(offset)
            pieces += [ids.astype(dtype), eos]
            offset += len(ids) + 1
    tokens = np.concatenate(pieces) if pieces else np.zeros(0, dtype=dtype)
    return TokenStream(tokens, np.asarray(starts, dtype=np.int64))


# ------------------------------------------------------------------------------------------------- batches
class PackedCollate:
    """Windows of ``T + 1`` tokens → the batch dict (``input_ids``, ``labels``, ``cu_seqlens``, ``num_tokens``)."""

    def __init__(self, eos_id: int) -> None:
        self.eos_id = eos_id

    def __call__(self, windows: Sequence[np.ndarray]) -> dict[str, Any]:
        w = torch.from_numpy(np.stack(windows).astype(np.int64))  # [B, T + 1]
        inputs, targets = w[:, :-1].contiguous(), w[:, 1:]
        is_eos = inputs == self.eos_id
        labels = targets.masked_fill(is_eos, IGNORE_INDEX)
        batch, length = inputs.shape
        starts = torch.zeros(batch, length, dtype=torch.bool)
        starts[:, 0] = True
        starts[:, 1:] = is_eos[:, :-1]
        offsets = starts.flatten().nonzero().flatten()
        cu_seqlens = torch.cat([offsets, torch.tensor([batch * length])]).to(torch.int32)
        return {
            "input_ids": inputs,
            "labels": labels,
            "cu_seqlens": cu_seqlens,
            "num_tokens": int((labels != IGNORE_INDEX).sum()),
        }


class TrainWindows(Dataset):
    """Training windows of ``seq_len + 1`` tokens, indexed by their start offset in the stream (drawn by
    :class:`WindowSampler`). The stream is read as a ring: it ends with EOS, so a window running past the end
    continues with the first document. ``len`` is the number of windows in an epoch."""

    def __init__(self, tokens: np.ndarray, seq_len: int) -> None:
        self.tokens = tokens
        self.seq_len = seq_len

    def __len__(self) -> int:
        return len(self.tokens) // self.seq_len

    def __getitem__(self, offset: int) -> np.ndarray:
        n, end = len(self.tokens), offset + self.seq_len + 1
        if end <= n:
            return self.tokens[offset:end]
        return np.concatenate([self.tokens[offset:], self.tokens[: end - n]])


class EvalWindows(Dataset):
    """Consecutive non-overlapping windows (inputs ``[k·T, (k+1)·T)`` and one more token for the last target);
    the tail shorter than a window is left out. ``limit`` keeps that many windows, evenly spread over the split."""

    def __init__(self, tokens: np.ndarray, seq_len: int, limit: int | None = None) -> None:
        self.tokens = tokens
        self.seq_len = seq_len
        n = max(0, (len(tokens) - 1) // seq_len)
        index = np.arange(n)
        if limit is not None and limit < n:
            index = np.unique(np.linspace(0, n - 1, limit).round().astype(np.int64))
        self.starts = index * seq_len

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> np.ndarray:
        start = int(self.starts[i])
        return self.tokens[start : start + self.seq_len + 1]


class WindowSampler(DistributedSampler):
    """Start offsets of an epoch's training windows, shuffled by ``seed + epoch`` and sharded across processes.

    Epoch ``e`` draws a shift ``s`` in ``[0, seq_len)`` and a permutation of the ``n = len(tokens) // seq_len``
    windows starting at ``s + k·seq_len`` (mod the stream length): every token is an input once per epoch, at a
    position that changes from epoch to epoch. Process ``rank`` of ``num_replicas`` takes every ``num_replicas``-th
    offset of the first ``n // num_replicas · num_replicas``. A ``DistributedSampler`` so that Lightning neither
    wraps nor replaces it, and calls :meth:`set_epoch`; a resumed run draws the same windows.

    :meth:`resume_at` makes the next pass over a given epoch leave out its first samples (mid-epoch resumption);
    ``skipped`` is how many the current pass left out.
    """

    def __init__(self, num_tokens: int, seq_len: int, num_replicas: int = 1, rank: int = 0, seed: int = 0) -> None:
        self.num_tokens = num_tokens
        self.seq_len = seq_len
        self.num_windows = num_tokens // seq_len
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.epoch = 0
        self.shuffle = True
        self.drop_last = True
        self.num_samples = self.num_windows // num_replicas
        self.total_size = self.num_samples * num_replicas
        self.skipped = 0
        self._resume: tuple[int, int] | None = None

    def offsets(self, epoch: int) -> list[int]:
        """This process's window offsets of ``epoch``, in order."""
        generator = torch.Generator().manual_seed(self.seed + epoch)
        shift = int(torch.randint(self.seq_len, (1,), generator=generator))
        order = torch.randperm(self.num_windows, generator=generator)[: self.total_size]
        offsets = (shift + order * self.seq_len) % self.num_tokens
        return offsets[self.rank : self.total_size : self.num_replicas].tolist()

    def resume_at(self, epoch: int, samples: int) -> None:
        """Start the next pass, if it is over ``epoch``, after its first ``samples`` offsets."""
        self._resume = (epoch, samples)

    def __iter__(self):
        offsets = self.offsets(self.epoch)
        self.skipped = 0
        if self._resume is not None:
            epoch, samples = self._resume
            self._resume = None
            if epoch == self.epoch:
                self.skipped = min(samples, len(offsets))
        return iter(offsets[self.skipped :])

    def __len__(self) -> int:
        return self.num_samples


class ResumableLoader(DataLoader):
    """A training loader that Lightning checkpoints mid-epoch (it has ``state_dict`` / ``load_state_dict``).

    Its state is the epoch and the number of batches it has yielded in it (under the key :attr:`count_key`); after
    :meth:`load_state_dict` the next pass over that epoch starts after those batches, so a run resumed from a
    mid-epoch checkpoint trains on exactly the batches an uninterrupted run would. (Lightning fetches no batch
    ahead from a loader with a length, so the count is that of the batches trained on.)

    The sampler must expose ``epoch``, ``skipped`` (sampler items left out at the start of the current pass) and
    ``resume_at(epoch, items)`` — :class:`WindowSampler`, :class:`tasks.data.rl_prompts.StepSampler`. A batch is
    ``batch_size`` sampler items, or one with ``batch_size=None``.
    """

    count_key = "batches"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._position: tuple[int, int] | None = None  # (epoch, batches yielded in it)

    @property
    def items_per_batch(self) -> int:
        return self.batch_size or 1

    def __iter__(self):
        return self._counted(super().__iter__())

    def _counted(self, batches):
        self._position = None
        for batch in batches:  # the sampler runs at the first batch, after Lightning's set_epoch
            if self._position is None:
                self._position = (self.sampler.epoch, self.sampler.skipped // self.items_per_batch)
            epoch, count = self._position
            self._position = (epoch, count + 1)
            yield batch

    def state_dict(self) -> dict[str, int]:
        if self._position is None:
            return {}
        epoch, count = self._position
        return {"epoch": epoch, self.count_key: count}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        if state_dict:
            self.sampler.resume_at(state_dict["epoch"], state_dict[self.count_key] * self.items_per_batch)


# ------------------------------------------------------------------------------------------------- the module
def _positive(value: Any, key: str, *, optional: bool = False, minimum: int = 1) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"data.{key}={value!r} must be an integer ≥ {minimum}{' or null' if optional else ''}")


def file_stat(path: Path) -> list[Any]:
    info = path.stat()
    return [str(path), info.st_size, info.st_mtime_ns]


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:24]


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
    def _make_tokenizer(self, docs_key: str, documents: Callable[[], dict[str, list[Document]]]) -> Tokenizer:
        if self.tokenizer_kind == "byte":
            return ByteTokenizer()
        import tokenizers

        key = [docs_key, self.vocab_size, tokenizers.__version__, CACHE_VERSION]  # training may change with the version
        path = self.cache_dir / f"bpe-{_digest(key)}.json"
        if path.is_file():
            try:
                return tokenizer_from_json(path.read_text(encoding="utf-8"))
            except Exception as exc:  # a damaged cache entry: train again
                log.warning("ignoring the cached tokenizer %s: %s", path, exc)
        start = time.perf_counter()
        train_docs = documents()["train"]
        tokenizer = BPETokenizer.train((d.text for d in train_docs), self.vocab_size)
        log.info(
            "trained a %d-id BPE on %d training documents in %.1f s",
            tokenizer.vocab_size,
            len(train_docs),
            time.perf_counter() - start,
        )
        self._write_cache(path, lambda handle: handle.write(tokenizer.to_json().encode()))
        return tokenizer

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

    def _streams(
        self, tokenizer: Tokenizer, docs_key: str, documents: Callable[[], dict[str, list[Document]]]
    ) -> dict[str, TokenStream]:
        tok_key = hashlib.sha256(tokenizer.to_json().encode()).hexdigest()
        path = self.cache_dir / f"tokens-{_digest([docs_key, tok_key, CACHE_VERSION])}.npz"
        if path.is_file():
            try:
                with np.load(path) as data:
                    return {s: TokenStream(data[f"{s}_tokens"], data[f"{s}_starts"]) for s in SPLITS}
            except Exception as exc:
                log.warning("ignoring the cached token streams %s: %s", path, exc)
        start = time.perf_counter()
        streams = {split: tokenize_documents(tokenizer, docs) for split, docs in documents().items()}
        log.info("tokenized the corpus in %.1f s", time.perf_counter() - start)
        arrays = {}
        for split, stream in streams.items():
            arrays[f"{split}_tokens"], arrays[f"{split}_starts"] = stream.tokens, stream.doc_starts
        self._write_cache(path, lambda handle: np.savez(handle, **arrays))  # type: ignore[arg-type]
        return streams

    def _write_cache(self, path: Path, write: Callable[[Any], Any]) -> None:
        try:
            with atomic_write(path, "wb") as handle:
                write(handle)
        except OSError as exc:
            log.warning("could not write the cache file %s: %s", path, exc)

    def _build(self) -> None:
        """Tokenizer and token streams from the cache, or computed (and cached)."""
        docs_key = _digest([type(self).__qualname__, self.source_signature(), CACHE_VERSION])
        memo: dict[str, dict[str, list[Document]]] = {}

        def documents() -> dict[str, list[Document]]:
            if "docs" not in memo:
                memo["docs"] = self.load_documents()
            return memo["docs"]

        if self.tokenizer is None:  # not restored from a checkpoint already
            self.tokenizer = self._make_tokenizer(docs_key, documents)
        self._check_tokenizer(self.tokenizer)
        self.streams = self._streams(self.tokenizer, docs_key, documents)
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
