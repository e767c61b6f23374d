"""Tokenising: documents → one :class:`TokenStream` per split, the tokenizer to use, and their on-disk cache.

Cache entries live under a ``cache_dir`` and are named by :func:`digest` of what determines them (the documents'
key, the tokenizer, :data:`CACHE_VERSION`): ``bpe-<key>.json`` for a trained tokenizer, ``tokens-<key>.npz`` for a
corpus's streams. A damaged entry is computed again; one that cannot be written is only warned about.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tasks.data.text.reading import SPLITS, Document
from tasks.data.tokenizer import BPETokenizer, ByteTokenizer, Tokenizer, tokenizer_from_json
from zoo.io import atomic_write

log = logging.getLogger(__name__)

TOKENIZER_CHOICES = ("byte", "bpe")
CACHE_VERSION = 1


def cache_root() -> Path:
    """The zoo's cache folder: ``$XDG_CACHE_HOME/zoo`` or ``~/.cache/zoo``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "zoo"


def file_stat(path: Path) -> list[Any]:
    """``[path, size, mtime_ns]`` of a file: what a cache key records of it (JSON-able)."""
    info = path.stat()
    return [str(path), info.st_size, info.st_mtime_ns]


def digest(data: Any) -> str:
    """A cache key: 24 hex digits of the SHA-256 of ``data`` as JSON (keys sorted)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:24]


def write_cache(path: Path, write: Callable[[Any], Any]) -> None:
    """Write a cache file atomically with ``write(binary_handle)``; a failure (``OSError``) is only logged."""
    try:
        with atomic_write(path, "wb") as handle:
            write(handle)
    except OSError as exc:
        log.warning("could not write the cache file %s: %s", path, exc)


@dataclass
class TokenStream:
    """A split's documents as one token array, each followed by EOS; ``doc_starts`` are the documents' offsets.

    ``tokens``: ``uint16 [N]`` when the vocabulary fits, else ``int32 [N]``; ``doc_starts``: ``int64 [D]``.
    """

    tokens: np.ndarray
    doc_starts: np.ndarray

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def num_docs(self) -> int:
        return len(self.doc_starts)


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


def make_tokenizer(
    kind: str,
    vocab_size: int,
    cache_dir: Path,
    docs_key: str,
    train_documents: Callable[[], Sequence[Document]],
) -> Tokenizer:
    """The tokenizer of ``kind`` (one of :data:`TOKENIZER_CHOICES`).

    ``byte`` needs no data; ``bpe`` is a ``vocab_size``-id byte-level BPE read from the cache (keyed by
    ``docs_key``, the ``vocab_size`` and the ``tokenizers`` version), else trained on ``train_documents()`` (called
    only then) and cached.
    """
    if kind == "byte":
        return ByteTokenizer()
    import tokenizers

    key = [docs_key, vocab_size, tokenizers.__version__, CACHE_VERSION]  # training may change with the version
    path = cache_dir / f"bpe-{digest(key)}.json"
    if path.is_file():
        try:
            return tokenizer_from_json(path.read_text(encoding="utf-8"))
        except Exception as exc:  # a damaged cache entry: train again
            log.warning("ignoring the cached tokenizer %s: %s", path, exc)
    start = time.perf_counter()
    docs = train_documents()
    tokenizer = BPETokenizer.train((d.text for d in docs), vocab_size)
    log.info(
        "trained a %d-id BPE on %d training documents in %.1f s",
        tokenizer.vocab_size,
        len(docs),
        time.perf_counter() - start,
    )
    write_cache(path, lambda handle: handle.write(tokenizer.to_json().encode()))
    return tokenizer


def cached_streams(
    tokenizer: Tokenizer,
    cache_dir: Path,
    docs_key: str,
    documents: Callable[[], dict[str, list[Document]]],
) -> dict[str, TokenStream]:
    """``{split: TokenStream}`` for every split of :data:`~tasks.data.text.reading.SPLITS`, read from the cache
    (keyed by ``docs_key`` and the tokenizer), else tokenized from ``documents()`` (called only then) and cached."""
    tok_key = hashlib.sha256(tokenizer.to_json().encode()).hexdigest()
    path = cache_dir / f"tokens-{digest([docs_key, tok_key, CACHE_VERSION])}.npz"
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
    write_cache(path, lambda handle: np.savez(handle, **arrays))  # type: ignore[arg-type]
    return streams
