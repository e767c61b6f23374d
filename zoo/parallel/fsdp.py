"""FSDP2 (``torch.distributed.fsdp.fully_shard``) on a causal LM of the model protocol."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

#: The causal-LM protocol's methods besides ``forward`` that run the network; FSDP2 hooks only ``forward`` unless told.
PROTOCOL_ENTRY_POINTS = ("hidden_states", "forward_head", "forward_loss")


def apply_fsdp(
    model: Any,
    mesh: DeviceMesh,
    *,
    param_dtype: torch.dtype | None = None,
    reduce_dtype: torch.dtype | None = torch.float32,
    reshard_after_forward: bool = True,
    cpu_offload: bool = False,
    expert_mesh: DeviceMesh | None = None,
) -> Any:
    """Shard ``model`` over the 1-D data-parallel ``mesh``, in place, in torchtitan's order: the token embedding,
    each of ``model.blocks()`` (after any activation checkpointing, so the all-gather is outside the recompute),
    ``model.output_layers()`` as one unit that keeps its parameters after forward (they are needed again first in
    backward), then the root (whatever is left, e.g. a value head).

    Args:
        param_dtype: compute dtype of the gathered parameters (bf16 on GPUs; None keeps the stored dtype).
        reduce_dtype: dtype of the gradient reduce-scatter (fp32).
        reshard_after_forward: free the gathered block parameters after forward (re-gather in backward).
        cpu_offload: keep the sharded parameters, gradients and optimizer state in CPU memory.
        expert_mesh: under expert parallelism, the ``efsdp`` mesh (ranks holding the same experts): each MoE
            layer's experts become their own unit sharded over it, first, with their gradients divided by the whole
            world size like every other gradient (each rank's expert gradient already sums its ``ep`` group's
            tokens).

    Returns:
        ``model`` (now an ``FSDPModule``; its parameters are ``DTensor`` shards).
    """
    options: dict[str, Any] = {
        "mesh": mesh,
        "mp_policy": MixedPrecisionPolicy(param_dtype, reduce_dtype),
        "shard_placement_fn": shard_placement(mesh.size()),
    }
    if cpu_offload:
        options["offload_policy"] = CPUOffloadPolicy()
    if expert_mesh is not None:
        expert_options = {**options, "mesh": expert_mesh, "shard_placement_fn": shard_placement(expert_mesh.size())}
        for layer in model.moe_layers():
            fully_shard(layer.experts, reshard_after_forward=reshard_after_forward, **expert_options)
            layer.experts.set_gradient_divide_factor(float(mesh.size()))
    fully_shard(model.input_embeddings(), reshard_after_forward=reshard_after_forward, **options)
    for block in model.blocks():
        fully_shard(_wrapped_or_self(model, block), reshard_after_forward=reshard_after_forward, **options)
    fully_shard(model.output_layers(), reshard_after_forward=False, **options)
    fully_shard(model, reshard_after_forward=reshard_after_forward, **options)
    for method in PROTOCOL_ENTRY_POINTS:  # called without forward (e.g. RL's log-probabilities): FSDP's root hooks
        if callable(getattr(model, method, None)):
            register_fsdp_forward_method(model, method)
    return model


def is_sharded(module: nn.Module) -> bool:
    """Whether ``module`` has parameters sharded over a process group (``DTensor`` s: FSDP2, expert parallelism),
    so that its forward is a collective every rank must call as often."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        return False
    return any(hasattr(p, "device_mesh") for p in module.parameters())


def shard_dim(shape: torch.Size | tuple[int, ...], world_size: int) -> int:
    """The dimension FSDP2 shards a parameter of ``shape`` along: 0, unless it has fewer rows than ranks and a
    later dimension divides evenly among them (the stacked experts ``[E, 2H, D]`` with E = 32 on 64 ranks would
    otherwise leave half of the ranks with padding and the rest with a whole expert each; torchtitan shards those
    along dim 1 too). FSDP2 shards only dim 0 unevenly, so a later dimension must be a multiple of the world
    size (else dim 0 it is, padded)."""
    if len(shape) < 2 or shape[0] >= world_size:
        return 0
    even = [d for d in range(1, len(shape)) if shape[d] % world_size == 0]  # FSDP2 pads dim 0 only
    return max(even, key=lambda d: shape[d]) if even else 0


def shard_placement(world_size: int):
    """``fully_shard``'s ``shard_placement_fn``: ``Shard(shard_dim(...))``."""
    from torch.distributed.tensor import Shard

    return lambda param: Shard(shard_dim(param.shape, world_size))


def _wrapped_or_self(model: Any, block: Any) -> Any:
    """The checkpoint wrapper around ``block`` if activation checkpointing wrapped it, else the block."""
    for module in model.modules():
        if getattr(module, "_checkpoint_wrapped_module", None) is block:
            return module
    return block


def apply_fsdp_to_units(
    root: nn.Module,
    units: list[nn.Module],
    mesh: DeviceMesh,
    *,
    param_dtype: torch.dtype | None = None,
    reduce_dtype: torch.dtype | None = torch.float32,
    reshard_after_forward: bool = True,
    cpu_offload: bool = False,
) -> nn.Module:
    """FSDP2 for a network that is not a causal LM (a vision backbone): ``fully_shard`` each of ``units`` (e.g. the
    residual blocks; their checkpoint wrappers if activation checkpointing wrapped them), then ``root`` (the stem,
    the head, whatever is left)."""
    options: dict[str, Any] = {
        "mesh": mesh,
        "mp_policy": MixedPrecisionPolicy(param_dtype, reduce_dtype),
        "shard_placement_fn": shard_placement(mesh.size()),
        "reshard_after_forward": reshard_after_forward,
    }
    if cpu_offload:
        options["offload_policy"] = CPUOffloadPolicy()
    for param in root.parameters():  # FSDP2 shards contiguous tensors only (channels_last conv weights are not)
        if not param.is_contiguous():
            param.data = param.data.contiguous()
    for unit in units:
        fully_shard(_wrapped_or_self(root, unit), **options)
    fully_shard(root, **options)
    return root
