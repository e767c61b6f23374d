"""Silence messages of the libraries under the zoo that tell a user nothing about their run.

Each entry is matched exactly and says why it is dropped; everything else Lightning and PyTorch print stays.
"""

from __future__ import annotations

import logging
import warnings

#: Info lines of Lightning's ``rank_zero_info`` that are advertisements or internal bookkeeping.
LIGHTNING_INFO_PREFIXES = (
    "💡 Tip:",  # litlogger / litmodels advertisements, printed at every run
    "Loading `train_dataloader` to estimate number of stepping batches.",  # the schedule's length is computed
)

#: (message regex, category) of warnings raised inside a library by the library itself, not by the user's code.
LIBRARY_WARNINGS = (
    # Lightning's pytree helper on torch ≥ 2.10 (lightning/pytorch/utilities/_pytree.py), fixed upstream later
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),
)


#: (logger, message prefix) of log records that describe a library's internals.
LIBRARY_LOG_PREFIXES = (
    # DTensor, once per run, when the gradient norm of experts sharded on the 2-D (efsdp, ep) mesh is reduced over
    # both mesh dimensions (zoo/parallel/clip.py): two small all-reduces instead of one, nothing to act on
    ("torch.distributed.tensor._redistribute", ("While redistributing from",)),
)


class _DropPrefixes(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


_installed = False


def quiet_library_noise() -> None:
    """Install the filters (idempotent)."""
    global _installed
    if _installed:
        return
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropPrefixes(LIGHTNING_INFO_PREFIXES))
    for logger, prefixes in LIBRARY_LOG_PREFIXES:
        logging.getLogger(logger).addFilter(_DropPrefixes(prefixes))
    for message, category in LIBRARY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    _installed = True
