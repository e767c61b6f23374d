"""Tokenizers of the language-model data: UTF-8 bytes, or a byte-level BPE trained with HF ``tokenizers``.

Both map text to ids in ``[0, vocab_size)`` and have an end-of-document id ``eos_id`` that the data appends after
every document. Either one serialises to a small JSON envelope, ``{"kind": "byte"}`` or ``{"kind": "bpe",
"tokenizer": <HF tokenizer.json>}``, which :func:`tokenizer_from_json` / :func:`load_tokenizer` read back.

A run keeps its tokenizer twice: ``tokenizer.json`` beside the checkpoints, and inside every checkpoint (the
datamodule's ``state_dict``, which Lightning stores under the datamodule's class name, e.g.
``ckpt["TextDataModule"]["tokenizer"]``); :func:`tokenizer_from_checkpoint` finds it there.
"""

from __future__ import annotations

import abc
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zoo.errors import ConfigError
from zoo.io import atomic_write

FILENAME = "tokenizer.json"
EOS_TOKEN = "<|endoftext|>"


class Tokenizer(abc.ABC):
    """Text ↔ ids.

    Attributes:
        vocab_size: size of the id space (every id is below it); the model's embedding may be larger.
        eos_id: the end-of-document id.
    """

    kind: str = ""
    vocab_size: int
    eos_id: int

    @abc.abstractmethod
    def encode(self, text: str) -> list[int]:
        """The ids of ``text`` (no EOS appended)."""

    @abc.abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids``; EOS and ids outside the vocabulary are dropped."""

    @abc.abstractmethod
    def to_json(self) -> str:
        """The JSON envelope ``{"kind": ..., ...}`` that :func:`tokenizer_from_json` reads."""

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        """``encode`` of each text as an int64 array (subclasses do it faster)."""
        return [np.asarray(self.encode(text), dtype=np.int64) for text in texts]

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``directory/tokenizer.json`` atomically; return its path."""
        path = Path(directory) / FILENAME
        with atomic_write(path, "w") as handle:
            handle.write(self.to_json())
            handle.write("\n")
        return path

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tokenizer) and self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash(self.to_json())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size}, eos_id={self.eos_id})"


class ByteTokenizer(Tokenizer):
    """UTF-8 bytes: ids 0–255 are the bytes, 256 is EOS (``vocab_size`` 257). Needs no training and no files."""

    kind = "byte"
    vocab_size = 257
    eos_id = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8", errors="replace"))

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [
            np.frombuffer(text.encode("utf-8", errors="replace"), dtype=np.uint8).astype(np.int64) for text in texts
        ]

    def decode(self, ids: Sequence[int]) -> str:
        data = bytes(int(i) for i in ids if 0 <= int(i) < 256)
        return data.decode("utf-8", errors="replace")

    def to_json(self) -> str:
        return json.dumps({"kind": self.kind})


class BPETokenizer(Tokenizer):
    """A byte-level BPE (GPT-2 style: ByteLevel pre-tokenizer and decoder, no unknown token) with ``<|endoftext|>``
    as EOS, wrapping a HF ``tokenizers.Tokenizer``.

    A literal ``<|endoftext|>`` inside a document's text is encoded as ordinary text, never as EOS.
    """

    kind = "bpe"

    def __init__(self, hf_tokenizer: Any) -> None:
        eos_id = hf_tokenizer.token_to_id(EOS_TOKEN)
        if eos_id is None:
            raise ConfigError(f"the BPE tokenizer has no {EOS_TOKEN} token, which the language-model data needs")
        hf_tokenizer.encode_special_tokens = True  # text that spells <|endoftext|> stays text
        self.hf = hf_tokenizer
        self.eos_id = int(eos_id)
        self.vocab_size = int(hf_tokenizer.get_vocab_size(with_added_tokens=True))

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, *, min_frequency: int = 2) -> BPETokenizer:
        """Train a byte-level BPE of ``vocab_size`` ids (256 bytes + ``<|endoftext|>`` + merges) on ``texts``.

        Deterministic: the same texts in the same order give the same tokenizer. A corpus too small for
        ``vocab_size`` gives a smaller vocabulary.
        """
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        if vocab_size < 257:
            raise ConfigError(f"data.vocab_size={vocab_size}: a byte-level BPE needs at least 257 (256 bytes + EOS)")
        hf = HFTokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=[EOS_TOKEN],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        hf.train_from_iterator(texts, trainer=trainer)
        return cls(hf)

    def encode(self, text: str) -> list[int]:
        return list(self.hf.encode(text, add_special_tokens=False).ids)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        encode = getattr(self.hf, "encode_batch_fast", self.hf.encode_batch)  # _fast (no offsets): tokenizers ≥ 0.20
        encodings = encode(list(texts), add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.int64) for e in encodings]

    def decode(self, ids: Sequence[int]) -> str:
        kept = [int(i) for i in ids if 0 <= int(i) < self.vocab_size and int(i) != self.eos_id]
        return self.hf.decode(kept, skip_special_tokens=True)

    def to_json(self) -> str:
        return json.dumps({"kind": self.kind, "tokenizer": json.loads(self.hf.to_str())}, ensure_ascii=False)

    @classmethod
    def from_hf_json(cls, hf_json: str | Mapping[str, Any]) -> BPETokenizer:
        from tokenizers import Tokenizer as HFTokenizer

        text = hf_json if isinstance(hf_json, str) else json.dumps(hf_json, ensure_ascii=False)
        return cls(HFTokenizer.from_str(text))


TOKENIZERS: dict[str, type[Tokenizer]] = {"byte": ByteTokenizer, "bpe": BPETokenizer}


def tokenizer_from_json(text: str) -> Tokenizer:
    """The tokenizer of a JSON envelope written by :meth:`Tokenizer.to_json` (or a plain HF ``tokenizer.json``
    with an ``<|endoftext|>`` token)."""
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("a tokenizer JSON must be an object")
    kind = data.get("kind")
    if kind == "byte":
        return ByteTokenizer()
    if kind == "bpe":
        return BPETokenizer.from_hf_json(data["tokenizer"])
    if kind is None and "model" in data:  # a HF tokenizer.json
        return BPETokenizer.from_hf_json(data)
    raise ValueError(f"unknown tokenizer kind {kind!r}; valid kinds: {', '.join(TOKENIZERS)}")


def load_tokenizer(path_or_dir: str | os.PathLike) -> Tokenizer:
    """Read ``tokenizer.json`` (a file, or a folder holding one)."""
    path = Path(path_or_dir).expanduser()
    if path.is_dir():
        path = path / FILENAME
    if not path.is_file():
        raise FileNotFoundError(f"no tokenizer at {path}")
    return tokenizer_from_json(path.read_text(encoding="utf-8"))


def tokenizer_from_checkpoint(checkpoint: Mapping[str, Any]) -> Tokenizer:
    """The tokenizer stored in a Lightning checkpoint dict by a text DataModule's ``state_dict``.

    Lightning keeps a datamodule's state under its class's ``__qualname__`` (``"TextDataModule"``,
    ``"AustenDataModule"``, …); this looks at those two first, then at any entry holding a ``tokenizer`` string.

    Raises:
        ConfigError: the checkpoint holds no tokenizer.
    """
    preferred = ("TextDataModule", "AustenDataModule")
    keys = [k for k in preferred if k in checkpoint] + [k for k in checkpoint if k not in preferred]
    for key in keys:
        value = checkpoint[key]
        if isinstance(value, Mapping) and isinstance(value.get("tokenizer"), str):
            return tokenizer_from_json(value["tokenizer"])
    raise ConfigError(
        "the checkpoint holds no tokenizer (no datamodule state with a 'tokenizer' entry); it was not written by a "
        "run with a text DataModule"
    )
