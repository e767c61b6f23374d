"""A run's parallelism options and the function that applies them to a built model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.distributed.device_mesh import DeviceMesh

from zoo.errors import ConfigError
from zoo.parallel.checkpointing import AC_MODES, apply_activation_checkpointing, checkpoint_units
from zoo.parallel.compile import compile_kwargs, compile_units
from zoo.parallel.expert import apply_expert_parallel, expert_parallel_mesh
from zoo.parallel.fsdp import apply_fsdp, apply_fsdp_to_units
from zoo.parallel.router import use_global_router_statistics

PARAM_DTYPES = {"auto": None, "bf16": torch.bfloat16, "fp32": torch.float32}


@dataclass(frozen=True)
class ParallelPlan:
    """What :func:`parallelize` does (the ``strategy.*`` keys of ``strategy=fsdp2``).

    Attributes:
        activation_checkpointing: ``none``, ``full`` (every block) or ``selective`` (every other block).
        reshard_after_forward: free each block's gathered parameters after forward.
        cpu_offload: sharded parameters, gradients and optimizer state in CPU memory.
        param_dtype: ``auto`` (bf16 on CUDA, the stored dtype on the CPU), ``bf16`` or ``fp32``; gradients are
            reduced in fp32.
        expert_parallel_size: ranks that split each MoE layer's experts between them (tokens exchanged by
            all-to-all, :mod:`zoo.parallel.expert`); must divide the world size and every layer's experts.
        global_router: the MoE load-balancing loss counts every data-parallel rank's tokens.
    """

    activation_checkpointing: str = "none"
    reshard_after_forward: bool = True
    cpu_offload: bool = False
    param_dtype: str = "auto"
    expert_parallel_size: int = 1
    global_router: bool = True

    def __post_init__(self) -> None:
        if self.activation_checkpointing not in AC_MODES:
            raise ConfigError(
                f"strategy.activation_checkpointing='{self.activation_checkpointing}' is unknown; "
                f"valid: {', '.join(AC_MODES)}"
            )
        if self.param_dtype not in PARAM_DTYPES:
            raise ConfigError(f"strategy.param_dtype='{self.param_dtype}' is unknown; valid: {', '.join(PARAM_DTYPES)}")
        if self.expert_parallel_size < 1:
            raise ConfigError(f"strategy.expert_parallel_size={self.expert_parallel_size} must be ≥ 1")

    def check(self, model: Any, world_size: int) -> None:
        """Raise a :class:`~zoo.errors.ConfigError` naming the key when the plan does not fit ``model`` on
        ``world_size`` ranks."""
        ep = self.expert_parallel_size
        if ep == 1:
            return
        if world_size % ep:
            raise ConfigError(
                f"strategy.expert_parallel_size={ep} does not divide the world size {world_size}; valid: "
                f"{', '.join(str(d) for d in range(1, world_size + 1) if world_size % d == 0)}"
            )
        for layer in model.moe_layers():
            if layer.num_experts % ep:
                valid = [d for d in range(1, world_size + 1) if world_size % d == 0 and layer.num_experts % d == 0]
                raise ConfigError(
                    f"strategy.expert_parallel_size={ep} does not divide the {layer.num_experts} experts per MoE "
                    f"layer; valid: {', '.join(map(str, valid))}"
                )


def compute_dtype(plan: ParallelPlan, mesh: DeviceMesh) -> torch.dtype | None:
    """FSDP2's ``param_dtype`` for ``plan`` on ``mesh``: ``auto`` is bf16 on CUDA and the stored dtype (None)
    elsewhere."""
    if plan.param_dtype == "auto":
        return torch.bfloat16 if mesh.device_type == "cuda" else None
    return PARAM_DTYPES[plan.param_dtype]


def parallelize(model: Any, mesh: DeviceMesh, plan: ParallelPlan, compile: bool | dict[str, Any] = False) -> Any:
    """Apply ``plan`` to ``model`` on the 1-D data-parallel ``mesh``, in torchtitan's order: global router
    statistics, expert parallelism over an ``(efsdp, ep)`` view of the same ranks, activation checkpointing per
    block, ``torch.compile`` per block (``compile``: True, or ``torch.compile``'s keyword arguments;
    :func:`~zoo.parallel.compile.compile_units`), then FSDP2
    (experts over ``efsdp``, blocks, embedding, output layers, root).

    Idempotent: a model that is already sharded is returned as it is (Lightning calls ``configure_model`` for
    every stage)."""
    from torch.distributed.fsdp import FSDPModule

    if isinstance(model, FSDPModule):
        return model
    plan.check(model, mesh.size())
    if plan.global_router and mesh.size() > 1:
        use_global_router_statistics(model, mesh.get_group())
    expert_mesh = None
    if plan.expert_parallel_size > 1:
        expert_mesh = expert_parallel_mesh(mesh.device_type, mesh.size(), plan.expert_parallel_size)
        apply_expert_parallel(model, expert_mesh["ep"])
    apply_activation_checkpointing(model, plan.activation_checkpointing)
    if (kwargs := compile_kwargs(compile)) is not None:
        compile_units(model, model.blocks(), **kwargs)
    dtype = compute_dtype(plan, mesh)
    return apply_fsdp(
        model,
        mesh,
        param_dtype=dtype,
        reshard_after_forward=plan.reshard_after_forward,
        cpu_offload=plan.cpu_offload,
        expert_mesh=None if expert_mesh is None else expert_mesh["efsdp"],
    )


def parallelize_units(
    root: Any, units: list[Any], mesh: DeviceMesh, plan: ParallelPlan, compile: bool | dict[str, Any] = False
) -> Any:
    """:func:`parallelize` for a network that is not a causal LM (``task=vision``): activation checkpointing of
    ``units`` (e.g. residual blocks), ``torch.compile`` of each (``compile``), then FSDP2 over them and ``root``.
    Idempotent."""
    from torch.distributed.fsdp import FSDPModule

    if isinstance(root, FSDPModule):
        return root
    if plan.expert_parallel_size > 1:
        raise ConfigError(
            f"strategy.expert_parallel_size={plan.expert_parallel_size}: {type(root).__name__} has no MoE layers; "
            f"valid: 1"
        )
    checkpoint_units(root, units, plan.activation_checkpointing)
    if (kwargs := compile_kwargs(compile)) is not None:
        compile_units(root, units, **kwargs)
    dtype = compute_dtype(plan, mesh)
    return apply_fsdp_to_units(
        root, units, mesh, param_dtype=dtype, reshard_after_forward=plan.reshard_after_forward,
        cpu_offload=plan.cpu_offload,
    )  # fmt: skip
