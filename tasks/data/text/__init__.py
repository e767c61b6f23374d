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

The package, one concern a module (each imports only those above it):

================================== ==================================================================================
module                             holds
================================== ==================================================================================
:mod:`~tasks.data.text.reading`    files → :class:`Document` s; the standard-library corpus; the split by document
:mod:`~tasks.data.text.tokenising` documents → :class:`TokenStream` s; the tokenizer; the cache (keys, atomic writes)
:mod:`~tasks.data.text.packing`    streams → windows (:class:`TrainWindows`, :class:`EvalWindows`) → batch dicts
:mod:`~tasks.data.text.sampling`   the training windows' order (:class:`WindowSampler`); :class:`ResumableLoader`
:mod:`~tasks.data.text.datamodule` :class:`TextDataModule` (``text_files``), which composes them
================================== ==================================================================================

Every public name of these modules is importable from ``tasks.data.text``.
"""

from tasks.data.text.datamodule import TextDataModule
from tasks.data.text.packing import IGNORE_INDEX, EvalWindows, PackedCollate, TrainWindows
from tasks.data.text.reading import (
    FORMAT_CHOICES,
    SPLITS,
    STDLIB_EXCLUDED,
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
    tokenize_documents,
    write_cache,
)

__all__ = [
    "CACHE_VERSION",
    "FORMAT_CHOICES",
    "IGNORE_INDEX",
    "SPLITS",
    "STDLIB_EXCLUDED",
    "TOKENIZER_CHOICES",
    "Document",
    "EvalWindows",
    "PackedCollate",
    "ResumableLoader",
    "TextDataModule",
    "TokenStream",
    "TrainWindows",
    "WindowSampler",
    "cache_root",
    "cached_streams",
    "cap_documents",
    "digest",
    "expand_globs",
    "file_stat",
    "make_tokenizer",
    "read_documents",
    "split_by_document",
    "stdlib_files",
    "stdlib_root",
    "tokenize_documents",
    "write_cache",
]
