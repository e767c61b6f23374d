"""Checkpoint plumbing: atomic writes and the ``ckpt_path=last`` lookup."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from zoo.errors import ConfigError
from zoo.io import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """Saves each checkpoint to a temporary file in the target directory, fsyncs it and renames it into place.

    Lightning's own writer stages the file in the system temp directory and *moves* it, which degrades to a copy
    (and so to a partial file on a crash) when the two are on different filesystems.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        with atomic_write(path, "wb") as handle:
            torch.save(checkpoint, handle)


def resolve_ckpt_path(ckpt_path: str | None, output_dir: str | Path, search_dir: str | Path) -> str | None:
    """Turn the ``ckpt_path`` setting into a checkpoint file (or a distributed checkpoint's directory).

    ``None``: start fresh. ``"last"``: ``<output_dir>/checkpoints/last.ckpt`` if it exists, else the newest
    ``last.ckpt`` anywhere under ``search_dir`` (earlier runs of the same task). Anything else: a path that must
    exist.
    """
    if not ckpt_path:
        return None
    if ckpt_path == "last":
        own = Path(output_dir) / "checkpoints" / "last.ckpt"
        if own.exists():  # a file, or a distributed checkpoint's directory (strategy=fsdp2)
            return str(own)
        found = sorted(Path(search_dir).glob("**/last.ckpt"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise ConfigError(
                f"ckpt_path=last, but no last.ckpt exists in {own.parent} or under {search_dir}. "
                f"Train first, or give ckpt_path=<path to a .ckpt file>."
            )
        return str(found[-1])
    if not Path(ckpt_path).exists():
        raise ConfigError(f"ckpt_path={ckpt_path} does not exist (use 'last' or the path of a .ckpt file)")
    return str(ckpt_path)
