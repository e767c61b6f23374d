"""Models built on the meta device, sharded, then initialised one module at a time: no rank ever holds the whole
model, and the weights equal those of the same model built whole with the same seed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
from torch import nn

_ON_META: ContextVar[bool] = ContextVar("zoo_models_on_meta", default=False)


@contextmanager
def models_on_meta_device() -> Iterator[None]:
    """Inside, :func:`build_on_meta` is true: tasks build their networks on the meta device (no memory), for a
    sharding strategy to place and :func:`materialize_` to initialise (the Hydra and CLI front ends enter it when
    the strategy shards)."""
    token = _ON_META.set(True)
    try:
        yield
    finally:
        _ON_META.reset(token)


def build_on_meta() -> bool:
    """Whether networks are being built on the meta device (:func:`models_on_meta_device`)."""
    return _ON_META.get()


def has_meta_tensors(module: nn.Module) -> bool:
    return any(t.is_meta for t in (*module.parameters(), *module.buffers()))


@torch.no_grad()
def materialize_(model: Any, device: torch.device | str, *, param_device: torch.device | str | None = None) -> int:
    """Allocate a (sharded) model built on the meta device on ``device`` and initialise it module by module.
    With ``param_device`` (``"cpu"`` under FSDP2's CPU offload) the parameters live there and the buffers, which
    FSDP does not move, on ``device``.

    ``model.init_weights(module)`` (the causal-LM protocol's per-module initialiser, e.g.
    :meth:`zoo.models.HybridLM.init_weights`; else ``module.reset_parameters()``) runs on every module in module
    order, as ``reset_parameters`` would on the whole model. For a module whose parameters are ``DTensor`` shards
    the initialiser sees full-size CPU tensors in their place, drawn from the CPU generator, and each rank keeps
    its shard of them (``distribute_tensor(..., src_data_rank=None)``: no communication). So the random draws are
    those of the unsharded model built with the same seed (every rank must be seeded alike, as
    ``seed_everything`` does), for any world size; the memory high-water mark is the largest single parameter.

    Returns:
        the number of modules initialised.
    """
    model.to_empty(device=param_device or device)
    if param_device is not None and torch.device(param_device) != torch.device(device):
        for module in model.modules():
            for name, buffer in module._buffers.items():
                if buffer is not None:  # moved, not re-allocated: constants a module's _apply recomputed
                    module._buffers[name] = buffer.to(device)  # (e.g. lightning attention's decay rates) stay
    init = getattr(model, "init_weights", None)
    count = 0
    for module in model.modules():
        own = {name: p for name, p in module._parameters.items() if p is not None}
        if not own and not any(True for _ in module.buffers(recurse=False)):
            continue
        sharded = {name: p for name, p in own.items() if hasattr(p, "device_mesh")}
        for name, p in sharded.items():
            module._parameters[name] = nn.Parameter(torch.empty(p.shape, dtype=p.dtype), requires_grad=False)
        try:
            init(module) if init is not None else _reset(module)
            for name, p in sharded.items():
                _copy_shard(module._parameters[name].data, p)
        finally:
            for name, p in sharded.items():
                module._parameters[name] = p
        count += 1
    return count


def _reset(module: nn.Module) -> None:
    reset = getattr(module, "reset_parameters", None)
    if reset is not None:
        reset()


def _copy_shard(full: torch.Tensor, target: Any) -> None:
    """Copy this rank's part of ``full`` into the ``DTensor`` ``target``'s local shard."""
    from torch.distributed.tensor import distribute_tensor

    local = distribute_tensor(full, target.device_mesh, target.placements, src_data_rank=None).to_local()
    target.to_local().copy_(local)
