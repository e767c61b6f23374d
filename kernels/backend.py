"""Which backend a kernel runs on: its Triton code or its PyTorch reference (shared by every op in ``kernels/``).

``"torch"`` always runs the reference; ``"triton"`` runs the Triton code or raises why it cannot (except under
``ZOO_KERNELS=reference``, which forces the reference everywhere); ``"auto"`` runs Triton where it can and logs,
once per reason, why it fell back. CPU tensors run the Triton code only when asked for explicitly under
``TRITON_INTERPRET=1`` (tests).
"""

from __future__ import annotations

import functools
import logging
import os

import torch

__all__ = ["BACKENDS", "accept_or_fall_back", "log_once", "resolve_backend", "triton_unavailable"]

log = logging.getLogger(__name__)
BACKENDS = ("auto", "torch", "triton")


@functools.cache
def log_once(message: str) -> None:
    """Log ``message`` at INFO the first time it is seen."""
    log.info(message)


def triton_unavailable(tensor: torch.Tensor, explicit: bool) -> str | None:
    """Why the Triton backend cannot run on ``tensor``'s device here, or None if it can (``explicit``: the caller
    asked for ``"triton"``, which lets CPU tensors run under Triton's interpreter)."""
    if os.environ.get("ZOO_KERNELS", "").lower() == "reference":
        return "ZOO_KERNELS=reference"
    interpreting = explicit and os.environ.get("TRITON_INTERPRET", "0") == "1"
    if tensor.device.type != "cuda" and not (interpreting and tensor.device.type == "cpu"):
        return f"tensors are on {tensor.device.type}, not CUDA"
    try:
        import triton  # noqa: F401
    except ImportError as exc:  # pragma: no cover - triton ships with torch's CUDA wheels
        return f"triton is not importable ({exc})"
    return None


def resolve_backend(backend: str, tensor: torch.Tensor, op: str) -> str:
    """``"torch"`` or ``"triton"`` for the ``backend`` requested of ``op`` and the tensors it will run on.

    Raises:
        ValueError: ``backend`` is not one of :data:`BACKENDS`.
        RuntimeError: ``backend="triton"`` where Triton cannot run (other than ``ZOO_KERNELS=reference``).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "torch":
        return "torch"
    reason = triton_unavailable(tensor, explicit=backend == "triton")
    if backend == "triton":
        if reason is not None and reason != "ZOO_KERNELS=reference":
            raise RuntimeError(f"{op} backend='triton' cannot run: {reason}")
        return "torch" if reason else "triton"
    if reason is not None:
        log_once(f"{op}: using the PyTorch backend because {reason}")
        return "torch"
    return "triton"


def accept_or_fall_back(backend: str, op: str, reason: str | None) -> bool:
    """Whether ``op`` runs its Triton code, given why its kernels cannot take these inputs (``reason``, None if
    they can): ``"triton"`` raises on a reason, ``"auto"`` logs it once and falls back to PyTorch.

    Raises:
        ValueError: ``backend="triton"`` and a ``reason``.
    """
    if reason is None:
        return True
    if backend == "triton":
        raise ValueError(f"{op} backend='triton' cannot run: {reason}; use backend='auto' or 'torch'")
    log_once(f"{op}: using the PyTorch backend because {reason}")
    return False
