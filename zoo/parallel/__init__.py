"""Parallelism applied from outside single-device models (torchtitan's principle): functions that take a built
causal LM of the model protocol (:class:`zoo.models.CausalLM`) and a device mesh, in torchtitan's order —
expert parallelism, activation checkpointing per block, then FSDP2 per block, the embedding, the output layers,
the root.

============================== ====================================================================================
function                       what it does
============================== ====================================================================================
:func:`apply_activation_checkpointing`  recompute each block (``full``) or every other one (``selective``) in backward
:func:`apply_fsdp`             ``fully_shard`` each block, the embedding, ``[norm, head]`` together, then the root
:func:`use_global_router_statistics` the MoE load-balancing loss counts the tokens of every data-parallel rank
:func:`apply_expert_parallel`  split each MoE layer's experts over an ``ep`` group, tokens exchanged by all-to-all
:func:`clip_grad_norm_`        gradient-norm clipping over parameters sharded on several meshes
:func:`compile_units`          ``torch.compile`` each block in place (after checkpointing, before FSDP2)
:func:`materialize_`           allocate a model built on the meta device and initialise it shard by shard
:func:`parallelize_units`     the same plan for any other network, given its units (``task=vision``'s blocks)
:class:`ParallelPlan`          the options of a run (``strategy.*`` in the Hydra config), applied by
                               :func:`parallelize`
============================== ====================================================================================
"""

from zoo.parallel.checkpointing import AC_MODES, apply_activation_checkpointing
from zoo.parallel.clip import clip_grad_norm_
from zoo.parallel.compile import compile_units
from zoo.parallel.expert import apply_expert_parallel, expert_parallel_mesh
from zoo.parallel.fsdp import apply_fsdp, is_sharded
from zoo.parallel.init import build_on_meta, has_meta_tensors, materialize_, models_on_meta_device
from zoo.parallel.plan import ParallelPlan, parallelize, parallelize_units
from zoo.parallel.router import use_global_router_statistics

__all__ = [
    "AC_MODES",
    "ParallelPlan",
    "apply_activation_checkpointing",
    "apply_expert_parallel",
    "apply_fsdp",
    "build_on_meta",
    "clip_grad_norm_",
    "compile_units",
    "expert_parallel_mesh",
    "has_meta_tensors",
    "is_sharded",
    "materialize_",
    "models_on_meta_device",
    "parallelize",
    "parallelize_units",
    "use_global_router_statistics",
]
