"""Reading a corpus: files → :class:`Document` s (one per text file or JSON line) → a seeded split by document."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from zoo.errors import ConfigError, DatasetNotFoundError

SPLITS = ("train", "val", "test")
FORMAT_CHOICES = ("text", "jsonl")
# Folders of the standard library left out of the default corpus: tests, the IDLE editor, 2to3's fixers, demos.
STDLIB_EXCLUDED = frozenset(
    {"site-packages", "dist-packages", "test", "idlelib", "lib2to3", "turtledemo", "__pycache__"}
)


@dataclass(frozen=True)
class Document:
    """One document: ``name`` identifies it stably (a relative path, ``path:line`` for jsonl), for the split."""

    name: str
    text: str


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
