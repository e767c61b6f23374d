"""Language-model data: tokenizers, the text_files DataModule (packing, cu_seqlens, splits, cache) and Austen."""

from __future__ import annotations

import bz2
import gzip
import inspect
import json
import lzma
import random
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from tasks.app.runner import data_property
from tasks.data import austen as austen_module
from tasks.data.austen import (
    BOOKS,
    AustenDataModule,
    decompress_blob,
    find_janeaustenr,
    read_austen,
    read_lazyload_db,
    split_chapters,
    unserialize,
)
from tasks.data.text import (
    IGNORE_INDEX,
    EvalWindows,
    PackedCollate,
    TextDataModule,
    WindowSampler,
    split_by_document,
    stdlib_files,
    stdlib_root,
)
from tasks.data.tokenizer import (
    EOS_TOKEN,
    BPETokenizer,
    ByteTokenizer,
    load_tokenizer,
    tokenizer_from_checkpoint,
    tokenizer_from_json,
)
from zoo.config import check_kwargs
from zoo.errors import ConfigError, DatasetNotFoundError
from zoo.registries import DATA

CONF_DATA = Path(__file__).resolve().parents[2] / "conf" / "data"
# fmt: off
WORDS = ["the", "of", "and", "to", "a", "in", "was", "her", "it", "she", "that", "not", "be", "he", "his", "had",
         "as", "for", "with", "you", "but", "ä", "ö", "ß", "été", "日本", "🐍"]
# fmt: on


def sentence_text(seed: int, n_words: int) -> str:
    rng = random.Random(seed)
    lines, line = [], []
    for _ in range(n_words):
        line.append(rng.choice(WORDS))
        if rng.random() < 0.1:
            lines.append(" ".join(line))
            line = []
    return "\n".join([*lines, " ".join(line)]) + "\n"


def write_corpus(root: Path, n_docs: int = 14, prefix: str = "doc") -> list[Path]:
    """Small text files of different lengths under ``root/a`` and ``root/b/c`` (some a few words only)."""
    paths = []
    for i in range(n_docs):
        folder = root / ("a" if i % 2 else "b/c")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{prefix}{i:02d}.txt"
        path.write_text(sentence_text(i, 3 + (i * 37) % 120), encoding="utf-8")
        paths.append(path)
    return paths


def make_dm(tmp_path: Path, **kwargs) -> TextDataModule:
    kwargs.setdefault("files", str(tmp_path / "corpus" / "**" / "*.txt"))
    kwargs.setdefault("cache_dir", str(tmp_path / "cache"))
    kwargs.setdefault("seq_len", 32)
    kwargs.setdefault("batch_size", 4)
    return TextDataModule(**kwargs)


@pytest.fixture
def corpus(tmp_path):
    return write_corpus(tmp_path / "corpus")


# ----------------------------------------------------------------------------------------------- tokenizers
def test_byte_tokenizer_round_trip_with_non_ascii(tmp_path):
    tok = ByteTokenizer()
    text = "héllo wörld — 日本語 🐍\n\tend"
    ids = tok.encode(text)
    assert ids == list(text.encode("utf-8")) and max(ids) < 256
    assert (tok.vocab_size, tok.eos_id) == (257, 256)
    assert tok.decode([*ids, tok.eos_id]) == text  # EOS dropped
    assert tok.decode([0xE6, 0x97]) == "\ufffd"  # a cut multi-byte character is replaced, not an error
    assert [a.tolist() for a in tok.encode_batch([text, ""])] == [ids, []]
    assert tokenizer_from_json(tok.to_json()) == tok
    assert load_tokenizer(tok.save(tmp_path)) == tok


def test_bpe_trains_deterministically_round_trips_and_serialises(tmp_path):
    texts = [sentence_text(i, 200) for i in range(20)]
    tok = BPETokenizer.train(texts, vocab_size=320)
    assert tok.to_json() == BPETokenizer.train(texts, vocab_size=320).to_json()
    assert 257 < tok.vocab_size <= 320 and tok.hf.id_to_token(tok.eos_id) == EOS_TOKEN
    sample = "  she was not ä 日本語 🐍 unseen-Wörds\n\n\tx" + EOS_TOKEN + "y"
    ids = tok.encode(sample)
    assert tok.eos_id not in ids  # a literal <|endoftext|> in the text stays text
    assert max(ids) < tok.vocab_size
    assert tok.decode(ids) == sample
    assert tok.decode([*ids, tok.eos_id]) == sample
    assert [a.tolist() for a in tok.encode_batch([sample, "her"])] == [ids, tok.encode("her")]
    assert len(tok.encode("the and was")) < len("the and was")  # merges happened
    # save / load / to_json / checkpoint all give back an equal tokenizer
    path = tok.save(tmp_path)
    assert path == tmp_path / "tokenizer.json" and json.loads(path.read_text())["kind"] == "bpe"
    for restored in (load_tokenizer(tmp_path), load_tokenizer(path), tokenizer_from_json(tok.to_json())):
        assert restored == tok and restored.encode(sample) == ids and restored.eos_id == tok.eos_id
    hf_file = tmp_path / "hf.json"  # a plain HF tokenizer.json is accepted too
    hf_file.write_text(tok.hf.to_str())
    assert load_tokenizer(hf_file).encode(sample) == ids
    ckpt = {"state_dict": {}, "AustenDataModule": {"tokenizer": tok.to_json()}}
    assert tokenizer_from_checkpoint(ckpt) == tok
    with pytest.raises(ConfigError, match="no tokenizer"):
        tokenizer_from_checkpoint({"state_dict": {}})
    with pytest.raises(ConfigError, match="257"):
        BPETokenizer.train(texts, vocab_size=100)


# ----------------------------------------------------------------------------------------------- corpora
def test_stdlib_corpus_is_found_and_filtered():
    files = stdlib_files()
    root = stdlib_root()
    assert len(files) > 100 and files == sorted(files)
    assert root / "os.py" in files
    parts = {part for f in files for part in f.relative_to(root).parts[:-1]}
    assert not parts & {"site-packages", "test", "idlelib", "lib2to3", "turtledemo"}
    assert sum(f.stat().st_size for f in files) > 1_000_000


def test_stdlib_default_datamodule(tmp_path):
    dm = TextDataModule(max_docs=40, seq_len=64, batch_size=2, cache_dir=str(tmp_path))
    dm.setup("fit")
    assert dm.streams["train"].num_docs > 30 and dm.streams["val"].num_docs >= 1 and dm.streams["test"].num_docs >= 1
    text = dm.tokenizer.decode(dm.streams["train"].tokens[:20_000].tolist())
    assert "def " in text and "import " in text


def test_split_by_document_is_seeded_complete_and_keeps_one_each():
    from tasks.data.text import Document

    docs = [Document(f"d{i}", str(i)) for i in range(40)]
    train, val, test = split_by_document(docs, 0.1, 0.05, seed=0)
    assert (len(train), len(val), len(test)) == (34, 4, 2)
    assert sorted(d.name for d in train + val + test) == sorted(d.name for d in docs)
    assert split_by_document(docs, 0.1, 0.05, seed=0) == (train, val, test)
    assert split_by_document(docs, 0.1, 0.05, seed=1)[1] != val
    # a document's side depends on its name, not on the list's order or on other documents
    assert split_by_document(docs[::-1], 0.1, 0.05, seed=0)[1] == val[::-1]
    assert [len(s) for s in split_by_document(docs[:3], 0.01, 0.01, seed=0)] == [1, 1, 1]
    assert [len(s) for s in split_by_document(docs[:2], 0.01, 0.01, seed=0)] == [1, 1, 0]
    assert [len(s) for s in split_by_document(docs[:5], 0.0, 0.01, seed=0)] == [4, 0, 1]


# ----------------------------------------------------------------------------------------------- batches
def check_batch(batch, eos_id: int, batch_size: int, seq_len: int, windows: list[np.ndarray] | None = None):
    ids, labels, cu = batch["input_ids"], batch["labels"], batch["cu_seqlens"]
    assert ids.shape == labels.shape == (batch_size, seq_len)
    assert ids.dtype == labels.dtype == torch.int64 and cu.dtype == torch.int32
    is_eos = ids == eos_id
    assert torch.equal(labels == IGNORE_INDEX, is_eos)  # -100 exactly where the input is EOS
    assert torch.equal(labels[:, :-1][~is_eos[:, :-1]], ids[:, 1:][~is_eos[:, :-1]])  # else the next token
    if windows is not None:
        w = torch.as_tensor(np.stack(windows).astype(np.int64))
        assert torch.equal(ids, w[:, :-1])
        assert torch.equal(labels, w[:, 1:].masked_fill(is_eos, IGNORE_INDEX))
    # brute force: a segment starts at every row start and after every EOS
    expected = []
    for b in range(batch_size):
        for t in range(seq_len):
            if t == 0 or ids[b, t - 1] == eos_id:
                expected.append(b * seq_len + t)
    expected.append(batch_size * seq_len)
    assert cu.tolist() == expected
    assert cu[0] == 0 and cu[-1] == batch_size * seq_len and bool((cu[1:] > cu[:-1]).all())
    assert batch["num_tokens"] == int((labels != IGNORE_INDEX).sum()) and isinstance(batch["num_tokens"], int)


@pytest.mark.parametrize("tokenizer", ["byte", "bpe"])
def test_batches_shapes_labels_and_cu_seqlens(tmp_path, corpus, tokenizer):
    dm = make_dm(tmp_path, tokenizer=tokenizer, vocab_size=300 if tokenizer == "bpe" else 512, eval_batch_size=3)
    dm.setup("fit")
    assert dm.vocab_size == (300 if tokenizer == "bpe" else 512)
    eos = dm.tokenizer.eos_id
    stream = dm.streams["train"]
    assert stream.tokens.dtype == np.uint16 and stream.tokens[-1] == eos
    assert all(stream.tokens[s - 1] == eos for s in stream.doc_starts[1:])
    assert int((stream.tokens == eos).sum()) == stream.num_docs
    loader = dm.train_dataloader()
    assert len(loader) == (len(stream) // 32) // 4
    sampler = loader.sampler
    offsets = list(sampler)
    saw_eos = False
    for i, batch in enumerate(loader):
        windows = [dm.train_set[o] for o in offsets[4 * i : 4 * i + 4]]
        check_batch(batch, eos, 4, 32, windows)
        saw_eos |= bool((batch["input_ids"] == eos).any())
    assert saw_eos  # the corpus's short documents put several per window
    val = dm.val_set
    for i, batch in enumerate(dm.val_dataloader()):
        windows = [val[j] for j in range(3 * i, min(3 * i + 3, len(val)))]
        check_batch(batch, eos, len(windows), 32, windows)


def test_collate_by_hand():
    eos = 9
    windows = [np.array([1, 2, 9, 3, 4, 9, 5], dtype=np.uint16), np.array([9, 6, 7, 8, 9, 9, 1], dtype=np.uint16)]
    batch = PackedCollate(eos)(windows)
    assert batch["input_ids"].tolist() == [[1, 2, 9, 3, 4, 9], [9, 6, 7, 8, 9, 9]]
    assert batch["labels"].tolist() == [[2, 9, -100, 4, 9, -100], [-100, 7, 8, 9, -100, -100]]
    assert batch["cu_seqlens"].tolist() == [0, 3, 6, 7, 11, 12]
    assert batch["num_tokens"] == 7


def test_train_order_depends_on_seed_plus_epoch_and_is_reproducible(tmp_path, corpus):
    sampler = WindowSampler(num_tokens=1000, seq_len=32, seed=3)
    first = list(sampler)
    assert first == list(sampler) and len(first) == len(sampler) == 31
    assert sorted((o - first[0]) % 32 for o in first) == [0] * 31  # one shift, all windows on its grid
    assert len(set(first)) == 31
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first
    assert list(WindowSampler(1000, 32, seed=4)) == second  # the order depends on seed + epoch
    shards = [list(WindowSampler(1000, 32, num_replicas=3, rank=r, seed=3)) for r in range(3)]
    assert all(len(s) == 10 for s in shards) and not set(shards[0]) & set(shards[1])
    assert sorted(o for s in shards for o in s) == sorted(first[:30])
    # through the DataModule: same seed, same batches; another epoch or seed, others
    batches = []
    for seed in (0, 0, 1):
        dm = make_dm(tmp_path, seed=seed)
        dm.setup("fit")
        batches.append(next(iter(dm.train_dataloader()))["input_ids"])
    assert torch.equal(batches[0], batches[1]) and not torch.equal(batches[0], batches[2])
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(1)
    assert not torch.equal(next(iter(loader))["input_ids"], batches[2])


def test_train_windows_wrap_around_the_stream():
    from tasks.data.text import TrainWindows

    windows = TrainWindows(np.arange(10, dtype=np.uint16), seq_len=4)
    assert len(windows) == 2
    assert windows[8].tolist() == [8, 9, 0, 1, 2]


def test_val_windows_are_consecutive_and_deterministic(tmp_path, corpus):
    dm = make_dm(tmp_path, val_fraction=0.3, eval_batch_size=2)
    dm.setup("validate")
    n = len(dm.streams["val"])
    assert len(dm.val_set) == (n - 1) // 32 > 2
    assert dm.val_set.starts.tolist() == [32 * k for k in range(len(dm.val_set))]
    first = [b["input_ids"] for b in dm.val_dataloader()]
    again = [b["input_ids"] for b in dm.val_dataloader()]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    tokens = torch.as_tensor(dm.streams["val"].tokens.astype(np.int64))
    assert torch.equal(torch.cat(first).flatten(), tokens[: len(dm.val_set) * 32])
    limited = EvalWindows(dm.streams["val"].tokens, 32, limit=2)
    assert limited.starts.tolist() == [0, 32 * (len(dm.val_set) - 1)]


# ----------------------------------------------------------------------------------------------- sources
def test_jsonl_with_a_text_field(tmp_path):
    path = tmp_path / "data" / "corpus.jsonl"
    path.parent.mkdir()
    records = [{"id": i, "body": sentence_text(i, 30)} for i in range(12)]
    path.write_text(
        "\n".join(json.dumps(r) for r in records[:6]) + "\n\n" + "\n".join(json.dumps(r) for r in records[6:])
    )
    dm = make_dm(tmp_path, files=str(path), format="jsonl", text_field="body", val_fraction=0.2, test_fraction=0.1)
    docs = dm.load_documents()
    assert [len(docs[s]) for s in ("train", "val", "test")] == [9, 2, 1]
    assert sorted(d.text for s in docs.values() for d in s) == sorted(r["body"] for r in records)
    names = sorted(int(d.name.removeprefix("corpus.jsonl:")) for s in docs.values() for d in s)
    assert names == [1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13]  # path:line, the blank line 7 skipped
    dm.setup("fit")
    assert dm.streams["train"].num_docs == 9
    with pytest.raises(ConfigError, match=r"data.text_field='text'.*line 1.*id, body"):
        make_dm(tmp_path, files=str(path), format="jsonl").setup("fit")


def test_globs_lists_and_held_out_files(tmp_path, corpus):
    a = str(tmp_path / "corpus" / "a" / "*.txt")
    c = str(tmp_path / "corpus" / "b" / "**" / "*.txt")
    dm = make_dm(tmp_path, files=[a, c, a], val_fraction=0.0, test_fraction=0.0)
    assert len(dm.load_documents()["train"]) == len(corpus)
    # val/test files are taken out of the training files even when a training glob matches them
    val, test = corpus[0], corpus[1]
    dm = make_dm(tmp_path, val_files=str(val), test_files=[str(test)], max_docs=5)
    docs = dm.load_documents()
    assert [d.name for d in docs["val"]] == ["b/c/doc00.txt"] and [d.name for d in docs["test"]] == ["a/doc01.txt"]
    assert len(docs["train"]) == 5 and {"b/c/doc00.txt", "a/doc01.txt"}.isdisjoint(d.name for d in docs["train"])
    docs = make_dm(tmp_path, max_chars=1000, val_fraction=0.0, test_fraction=0.0).load_documents()
    assert sum(len(d.text) for d in docs["train"]) == 1000


def test_errors_name_the_key_and_the_choices(tmp_path, corpus):
    with pytest.raises(ConfigError, match=r"data.tokenizer='wordpiece'.*Valid choices: byte, bpe"):
        make_dm(tmp_path, tokenizer="wordpiece")
    with pytest.raises(ConfigError, match=r"data.format='csv'.*text, jsonl"):
        make_dm(tmp_path, format="csv")
    with pytest.raises(ConfigError, match=r"data.vocab_size=100.*257"):
        make_dm(tmp_path, vocab_size=100)
    with pytest.raises(ConfigError, match=r"data\.val_fraction"):
        make_dm(tmp_path, val_fraction=1.5)
    with pytest.raises(ConfigError, match=r"data\.seq_len"):
        make_dm(tmp_path, seq_len=0)
    missing = str(tmp_path / "nowhere" / "*.txt")
    with pytest.raises(DatasetNotFoundError, match=r"data.files: no files match .*nowhere"):
        make_dm(tmp_path, files=missing).setup("fit")
    with pytest.raises(DatasetNotFoundError, match=r"data\.val_files"):
        make_dm(tmp_path, val_files=missing).setup("fit")
    with pytest.raises(ConfigError, match=r"data\.seq_len=100000"):
        make_dm(tmp_path, seq_len=100_000).setup("fit")
    dm = make_dm(tmp_path, batch_size=10_000)
    dm.setup("fit")
    with pytest.raises(ConfigError, match=r"data\.batch_size"):
        dm.train_dataloader()


# ----------------------------------------------------------------------------------------------- cache
def test_cache_hit_does_not_tokenize_or_train_again(tmp_path, corpus, monkeypatch):
    for tokenizer in ("byte", "bpe"):
        dm = make_dm(tmp_path, tokenizer=tokenizer, vocab_size=300)
        dm.setup("fit")
        before = {s: v.tokens.copy() for s, v in dm.streams.items()}
        with monkeypatch.context() as patch:
            for cls in (ByteTokenizer, BPETokenizer):
                patch.setattr(cls, "encode", lambda *a, **k: pytest.fail("tokenized again"))
                patch.setattr(cls, "encode_batch", lambda *a, **k: pytest.fail("tokenized again"))
            patch.setattr(BPETokenizer, "train", classmethod(lambda *a, **k: pytest.fail("trained again")))
            again = make_dm(tmp_path, tokenizer=tokenizer, vocab_size=300)
            again.setup("fit")
        assert again.tokenizer == dm.tokenizer
        assert all(np.array_equal(again.streams[s].tokens, before[s]) for s in before)
    names = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert (
        len([n for n in names if n.startswith("bpe-")]) == 1 and len([n for n in names if n.startswith("tokens-")]) == 2
    )
    # a changed file changes the key
    corpus[3].write_text("changed text\n" * 50)
    calls = []
    original = ByteTokenizer.encode_batch
    monkeypatch.setattr(ByteTokenizer, "encode_batch", lambda self, texts: calls.append(1) or original(self, texts))
    make_dm(tmp_path).setup("fit")
    assert calls


def test_bpe_is_trained_on_the_training_split_only(tmp_path, corpus, monkeypatch):
    seen = []
    original = BPETokenizer.train.__func__

    def recording_train(cls, texts, vocab_size, **kwargs):
        texts = list(texts)
        seen.append(texts)
        return original(cls, texts, vocab_size, **kwargs)

    monkeypatch.setattr(BPETokenizer, "train", classmethod(recording_train))
    val = tmp_path / "held" / "val.txt"
    val.parent.mkdir()
    val.write_text("zyzzyva quokka " * 200)
    dm = make_dm(tmp_path, tokenizer="bpe", vocab_size=320, val_files=str(val))
    dm.setup("fit")
    docs = dm.load_documents()
    assert seen == [[d.text for d in docs["train"]]]
    held_out = {d.text for d in docs["val"] + docs["test"]}
    assert held_out and not held_out & set(seen[0])
    assert "zyzzyva" not in dm.tokenizer.hf.get_vocab() and "Ġquokka" not in dm.tokenizer.hf.get_vocab()


# ----------------------------------------------------------------------------------------------- state
def test_state_dict_round_trip_restores_the_tokenizer(tmp_path, corpus):
    dm = make_dm(tmp_path, tokenizer="bpe", vocab_size=300)
    dm.setup("fit")
    state = dm.state_dict()
    assert set(state) == {"tokenizer"} and json.loads(state["tokenizer"])["kind"] == "bpe"
    fresh = make_dm(tmp_path, tokenizer="byte", vocab_size=512)
    assert fresh.state_dict() == {}
    fresh.load_state_dict(state)  # before setup: setup then uses it instead of training one
    fresh.setup("fit")
    assert fresh.tokenizer == dm.tokenizer
    assert np.array_equal(fresh.streams["train"].tokens, dm.streams["train"].tokens)
    built = make_dm(tmp_path, tokenizer="byte", vocab_size=512)
    built.setup("fit")
    built.load_state_dict(state)  # after setup: the data is tokenized again with the restored tokenizer
    assert built.tokenizer == dm.tokenizer
    assert np.array_equal(built.streams["val"].tokens, dm.streams["val"].tokens)
    with pytest.raises(ConfigError, match=r"data\.vocab_size=257"):
        make_dm(tmp_path).load_state_dict(state)


class TinyLM(L.LightningModule):
    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab_size, 8)
        self.head = torch.nn.Linear(8, vocab_size)

    def training_step(self, batch, batch_idx):
        logits = self.head(self.embed(batch["input_ids"]))
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=-100)

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self.training_step(batch, batch_idx), batch_size=batch["input_ids"].shape[0])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_checkpoint_carries_the_tokenizer_and_it_is_saved_beside(tmp_path, corpus):
    from lightning.pytorch.callbacks import ModelCheckpoint

    dm = make_dm(tmp_path, tokenizer="bpe", vocab_size=300, num_workers=1)
    ckpt_dir = tmp_path / "run" / "checkpoints"
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=2,
        val_check_interval=2,
        limit_val_batches=2,
        num_sanity_val_steps=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ModelCheckpoint(dirpath=ckpt_dir, save_last=True)],
        default_root_dir=tmp_path / "run",
    )
    trainer.fit(TinyLM(dm.vocab_size), datamodule=dm)
    assert trainer.global_step == 2 and "val/loss" in trainer.callback_metrics
    assert isinstance(trainer.train_dataloader.sampler, WindowSampler)  # Lightning kept the sampler
    assert load_tokenizer(ckpt_dir) == dm.tokenizer
    ckpt = torch.load(ckpt_dir / "last.ckpt", weights_only=False)
    assert json.loads(ckpt["TextDataModule"]["tokenizer"])["kind"] == "bpe"  # Lightning's key: the class name
    assert tokenizer_from_checkpoint(ckpt) == dm.tokenizer


class RecordBatches(L.Callback):
    def __init__(self, stop_at: int | None = None) -> None:
        self.seen: list[torch.Tensor] = []
        self.stop_at = stop_at

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen.append(batch["input_ids"].clone())

    def on_train_batch_end(self, trainer, pl_module, *args):
        if self.stop_at is not None and trainer.global_step >= self.stop_at:
            trainer.should_stop = True


def fit_recording(tmp_path, dm, name, stop_at=None, ckpt_path=None) -> list[torch.Tensor]:
    from lightning.pytorch.callbacks import ModelCheckpoint

    record = RecordBatches(stop_at)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=7,
        limit_train_batches=3,  # epochs of 3 batches: the runs cross two epoch boundaries
        limit_val_batches=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[record, ModelCheckpoint(dirpath=tmp_path / name, every_n_train_steps=1, save_last=True)],
    )
    trainer.fit(TinyLM(dm.vocab_size), datamodule=dm, ckpt_path=ckpt_path)
    return record.seen


@pytest.mark.parametrize("stop_at", [2, 4])
def test_resume_mid_epoch_sees_the_batches_of_an_uninterrupted_run(tmp_path, corpus, stop_at):
    straight = fit_recording(tmp_path, make_dm(tmp_path), "straight")
    first = fit_recording(tmp_path, make_dm(tmp_path), "resumed", stop_at=stop_at)
    ckpt = torch.load(tmp_path / "resumed" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == stop_at
    assert ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [
        {"epoch": stop_at // 3, "batches": stop_at % 3}
    ]
    second = fit_recording(tmp_path, make_dm(tmp_path), "resumed", ckpt_path=str(tmp_path / "resumed" / "last.ckpt"))
    assert len(straight) == 7 and len(first) + len(second) == 7
    assert all(torch.equal(a, b) for a, b in zip(straight, first + second))
    assert not torch.equal(straight[0], straight[3])  # (epochs differ)


def test_resumable_loader_state_round_trip(tmp_path, corpus):
    dm = make_dm(tmp_path)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert loader.state_dict() == {}
    loader.sampler.set_epoch(2)
    everything = [b["input_ids"] for b in loader]
    iterator = iter(loader)
    head = [next(iterator)["input_ids"] for _ in range(3)]
    state = loader.state_dict()
    assert state == {"epoch": 2, "batches": 3}
    fresh = dm.train_dataloader()
    fresh.load_state_dict(state)
    fresh.sampler.set_epoch(2)
    rest = [b["input_ids"] for b in fresh]
    assert all(torch.equal(a, b) for a, b in zip(everything, head + rest)) and len(head + rest) == len(everything)
    assert fresh.state_dict() == {"epoch": 2, "batches": len(everything)}  # counts the skipped batches too
    other = dm.train_dataloader()
    other.load_state_dict(state)  # a state of another epoch is ignored
    assert torch.equal(next(iter(other))["input_ids"], next(iter(dm.train_dataloader()))["input_ids"])


# ----------------------------------------------------------------------------------------------- configs
@pytest.mark.parametrize("name", ["stdlib", "text_files", "austen"])
def test_configs_list_every_key(name):
    cfg = OmegaConf.load(CONF_DATA / f"{name}.yaml")
    cls = DATA.get(cfg.name)
    params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    assert sorted(k for k in cfg if k != "name") == sorted(params)
    values = {k: cfg[k] for k in params if not OmegaConf.is_missing(cfg, k) and k != "seed"}
    check_kwargs(cls, values, "data")
    assert data_property(cfg, "vocab_size") == cfg.vocab_size
    assert OmegaConf.to_yaml(cfg).count("${seed}") == 1


# ----------------------------------------------------------------------------------------------- Austen
def _i(value: int) -> bytes:
    return struct.pack(">i", value)


class RWriter:
    """The smallest XDR serializer of what the Austen data uses: NULL, character / integer / logical vectors,
    named lists (a ``names`` attribute pairlist), symbols written once and then referenced."""

    def __init__(self, version: int = 3) -> None:
        self.out = bytearray(b"X\n" + _i(version) + _i(0x040300) + _i(0x020300))
        if version == 3:
            self.out += _i(5) + b"UTF-8"
        self.symbols: dict[str, int] = {}

    def flags(self, kind: int, attr: bool = False, tag: bool = False, levels: int = 0) -> None:
        self.out += _i(kind | attr << 9 | tag << 10 | levels << 12)

    def charsxp(self, text: str | None) -> None:
        if text is None:
            self.flags(9)
            self.out += _i(-1)
        else:
            data = text.encode()
            self.flags(9, levels=1 << 3 if not data.isascii() else 1 << 6)  # UTF8 / ASCII
            self.out += _i(len(data)) + data

    def symbol(self, name: str) -> None:
        if name in self.symbols:
            self.out += _i(255 | self.symbols[name] << 8)  # REFSXP, index in the flags
            return
        self.symbols[name] = len(self.symbols) + 1
        self.flags(1)
        self.charsxp(name)

    def write(self, obj) -> None:
        if obj is None:
            self.flags(254)
        elif isinstance(obj, dict):
            self.flags(19, attr=True)
            self.out += _i(len(obj))
            for value in obj.values():
                self.write(value)
            self.flags(2, attr=False, tag=True)  # attributes: pairlist(names = ...)
            self.symbol("names")
            self.write(list(obj))
            self.flags(254)
        elif isinstance(obj, tuple):
            kind = 10 if all(isinstance(v, bool) for v in obj) else 13
            self.flags(kind)
            self.out += _i(len(obj)) + b"".join(_i(int(v)) for v in obj)
        else:  # a character vector
            self.flags(16)
            self.out += _i(len(obj))
            for item in obj:
                self.charsxp(item)

    def bytes(self) -> bytes:
        return bytes(self.out)


def serialize(obj, version: int = 3) -> bytes:
    writer = RWriter(version)
    writer.write(obj)
    return writer.bytes()


COMPRESSORS: dict[bytes, Callable[[bytes], bytes]] = {
    b"Z": zlib.compress,
    b"2": bz2.compress,
    b"X": lzma.compress,
    b"0": lambda data: data,
    b"": zlib.compress,  # compress = TRUE: zlib right after the length
}


def write_lazyload_db(prefix: Path, objects: dict[str, object]) -> None:
    prefix.parent.mkdir(parents=True, exist_ok=True)
    blobs, variables, offset = [], {}, 0
    for (name, obj), kind in zip(objects.items(), [b"Z", b"2", b"X", b"0", b"", b"Z", b"2"] * 3):
        payload = serialize(obj, version=2 if kind == b"2" else 3)
        blob = struct.pack(">I", len(payload)) + kind + COMPRESSORS[kind](payload)
        variables[name] = (offset, len(blob))
        blobs.append(blob)
        offset += len(blob)
    prefix.with_suffix(".rdb").write_bytes(b"".join(blobs))
    index = {"variables": variables, "references": {}, "compressed": (True,)}
    prefix.with_suffix(".rdx").write_bytes(gzip.compress(serialize(index)))


def fake_book(name: str, chapters: int) -> list[str | None]:
    lines: list[str | None] = [name.upper(), None, "by Jane Austen", None, None]
    for c in range(1, chapters + 1):
        if name == "emma" and c in (1, 3):
            lines += [f"VOLUME {'I' * (1 + c // 3)}", None, None]
        lines += [f"CHAPTER {c}", None, f"{name} chapter {c} begins. Ünïcode and “quotes”.", None]
        lines += [" ".join([f"{name}-{c}"] * 20), None, None]
    return lines


def test_unserialize_a_hand_built_blob():
    obj = {"a": ["x", None, "日本"], "n": (1, -(2**31), 3), "flag": (True, False), "empty": None}
    for version in (2, 3):
        value = unserialize(serialize(obj, version))
        named = value.named()
        assert named["a"] == ["x", None, "日本"] and named["n"] == [1, None, 3] and named["flag"] == [True, False]
        assert named["empty"] is None
    nested = unserialize(serialize({"outer": {"inner": ["v"]}, "other": {"names": ["w"]}}))
    assert nested.named()["outer"].named()["inner"] == ["v"]  # the second "names" symbol was a reference
    with pytest.raises(ValueError, match="not an R XDR"):
        unserialize(b"RDX2\n")
    payload = b"hello"
    for kind, compress in COMPRESSORS.items():
        assert decompress_blob(struct.pack(">I", 5) + kind + compress(payload)) == payload
    with pytest.raises(ValueError, match="header says"):
        decompress_blob(struct.pack(">I", 6) + b"0" + payload)


def test_lazyload_db_and_austen_datamodule_on_a_fake_package(tmp_path, monkeypatch):
    chapters = {name: 4 if name == "persuasion" else 3 for name in BOOKS}
    books = {name: fake_book(name, n) for name, n in chapters.items()}
    tree = tmp_path / "tree"
    package = tree / "usr/lib/R/site-library/janeaustenr"
    write_lazyload_db(package / "data" / "Rdata", books)
    objects = read_lazyload_db(package / "data" / "Rdata")
    assert {k: list(v) for k, v in objects.items()} == books
    texts = read_austen(package)
    assert texts["emma"] == "\n".join(line or "" for line in books["emma"])
    emma = split_chapters(texts["emma"])
    assert len(emma) == 3 and emma[0].startswith("EMMA") and emma[2].startswith("VOLUME II\n\n\nCHAPTER 3")
    assert find_janeaustenr(tree) == package == find_janeaustenr(package)
    monkeypatch.setenv("ZOO_JANEAUSTENR", str(tree))
    monkeypatch.setattr(austen_module, "DEBIAN_DIR", str(tmp_path / "no-debian"))
    assert find_janeaustenr() == package
    dm = AustenDataModule(tokenizer="byte", vocab_size=257, seq_len=16, batch_size=2, cache_dir=str(tmp_path / "c"))
    assert dict(dm.hparams) == {  # the constructor's own arguments
        name: dm.hparams[name] for name in inspect.signature(AustenDataModule.__init__).parameters if name != "self"
    }
    assert dm.hparams["tokenizer"] == "byte" and dm.hparams["root"] is None and "files" not in dm.hparams
    docs = dm.load_documents()
    assert len(docs["train"]) == 15 and [d.name for d in docs["val"]] == ["persuasion/01", "persuasion/02"]
    assert [d.name for d in docs["test"]] == ["persuasion/03", "persuasion/04"]
    assert docs["test"][0].text.startswith("CHAPTER 3") and "persuasion" not in {d.name[:10] for d in docs["train"]}
    dm.setup("fit")
    check_batch(next(iter(dm.train_dataloader())), 256, 2, 16)
    val_text = dm.tokenizer.decode(dm.streams["val"].tokens.tolist())
    assert "persuasion chapter 2 begins. Ünïcode" in val_text and "chapter 3" not in val_text


def test_missing_austen_says_how_to_get_it(tmp_path, monkeypatch):
    with pytest.raises(DatasetNotFoundError) as info:
        find_janeaustenr(tmp_path / "nowhere")
    message = str(info.value)
    assert "apt-get download r-cran-janeaustenr && dpkg -x r-cran-janeaustenr_*.deb DIR" in message
    assert "data.root=DIR/usr/lib/R/site-library/janeaustenr" in message and "data.download=true" in message
    dm = AustenDataModule(root=str(tmp_path / "nowhere"), cache_dir=str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match="apt-get download"):
        dm.setup("fit")
    monkeypatch.setattr(austen_module.shutil, "which", lambda name: None)
    dm = AustenDataModule(root=str(tmp_path / "nowhere"), download=True, cache_dir=str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match="needs apt-get and dpkg"):
        dm.prepare_data()


def _real_austen() -> Path | None:
    try:
        return find_janeaustenr()
    except DatasetNotFoundError:
        return None


REAL_AUSTEN = _real_austen()


@pytest.mark.skipif(
    REAL_AUSTEN is None,
    reason="r-cran-janeaustenr missing: mkdir -p ~/.cache/zoo && apt-get download r-cran-janeaustenr && "
    "dpkg -x r-cran-janeaustenr_*.deb ~/.cache/zoo/janeaustenr",
)
def test_real_austen_package(tmp_path):
    texts = read_austen(REAL_AUSTEN)
    lines = {name: text.count("\n") + 1 for name, text in texts.items()}
    assert lines == {
        "sensesensibility": 12624,
        "prideprejudice": 13030,
        "mansfieldpark": 15349,
        "emma": 16235,
        "northangerabbey": 7856,
        "persuasion": 8328,
    }
    assert len("\n\n".join(texts.values())) == 4_025_032  # data.md's count: books joined by a blank line
    assert [len(split_chapters(texts[name])) for name in BOOKS] == [50, 61, 48, 55, 31, 24]
    dm = AustenDataModule(cache_dir=str(tmp_path))
    docs = dm.load_documents()
    assert [len(docs[s]) for s in ("train", "val", "test")] == [245, 12, 12]
    assert docs["val"][0].text.startswith("Persuasion") and docs["test"][0].text.startswith("Chapter 13")
    assert texts["prideprejudice"].startswith("PRIDE AND PREJUDICE")
