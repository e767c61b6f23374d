"""FSDP2 on 2 CPU ranks (gloo) equals one process on the same global batch; activation checkpointing changes no
gradient; bad plans name the key."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from zoo.models import HybridLM
from zoo.parallel import (
    ParallelPlan,
    apply_activation_checkpointing,
    clip_grad_norm_,
    has_meta_tensors,
    materialize_,
    parallelize,
)

CONFIG = {
    "hidden_size": 32, "num_heads": 2, "num_kv_heads": 1, "head_dim": 16, "num_layers": 4, "attention": "LLLS",
    "intermediate_size": 48, "num_experts": 4, "top_k": 2, "moe_kwargs": {"aux_loss_coef": 0.1, "z_loss_coef": 0.01},
}  # fmt: skip
# Adam's ε: 1e-6, not torch's 1e-8. Router gradients of ~1e-8 differ in the last bits between one process and two
# ranks (fp32 sums in another order, other CPU kernels); ε = 1e-8 turns each of them into a full ±lr step of
# either sign (the gate's weights then differed by 2e-5 relative on an AVX-512 machine), 1e-6 leaves them small.
EPS = 1e-6
STEPS = 3


def global_batch() -> torch.Tensor:
    return torch.randint(0, 257, (4, 17), generator=torch.Generator().manual_seed(1))


def full(tensor: torch.Tensor) -> torch.Tensor:
    """A sharded ``DTensor`` gathered whole (a plain tensor as it is)."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def train_steps(
    model, ids: torch.Tensor, reduce=None, clip=torch.nn.utils.clip_grad_norm_, fused: bool = False
) -> tuple[list[float], dict[str, torch.Tensor]]:
    """3 AdamW steps of CE + MoE loss on ``ids``, gradients clipped by ``clip`` to norm 0.5 (about half the first
    step's); the (globally averaged) loss of each step and the gradients of the first after clipping (Adam's update
    hides a wrongly scaled gradient, so they are compared too). ``fused``: the CE through ``forward_loss`` (LM
    head and loss fused, chunked)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, eps=EPS)
    losses, first_grads = [], {}
    for step in range(STEPS):
        if fused:
            loss = model.forward_loss(ids[:, :-1], ids[:, 1:], chunk_size=5) + model.moe_loss()
        else:
            logits = model(ids[:, :-1])
            loss = F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten()) + model.moe_loss()
        loss.backward()
        clip(list(model.parameters()), 0.5)
        if step == 0:
            first_grads = {
                n.replace("._checkpoint_wrapped_module", ""): full(p.grad) for n, p in model.named_parameters()
            }
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(reduce(loss.detach()) if reduce else loss.item())
    return losses, first_grads


def fsdp_worker(
    rank: int, world: int, init_file: str, out: str, ac: str, config: dict, ep: int, meta: bool,
    fused: bool = False, compile: bool | dict = False,
) -> None:  # fmt: skip
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.device_mesh import init_device_mesh

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        with torch.device("meta") if meta else contextlib.nullcontext():
            model = HybridLM(config)
        plan = ParallelPlan(activation_checkpointing=ac, expert_parallel_size=ep)
        parallelize(model, init_device_mesh("cpu", (world,)), plan, compile=compile)
        if meta:  # initialised shard by shard: the same draws as the whole model's
            assert materialize_(model, "cpu") > 0 and not has_meta_tensors(model)

        def mean_over_ranks(x):
            dist.all_reduce(x)
            return x.item() / world

        batch = global_batch().chunk(world)[rank]
        losses, grads = train_steps(model, batch, mean_over_ranks, clip_grad_norm_, fused)
        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if rank == 0:
            torch.save({"losses": losses, "grads": grads, "state": state}, out)
        dist.barrier()  # no rank tears gloo down while the other still has collectives in flight
    finally:
        dist.destroy_process_group()


ONE_EXPERT = {**CONFIG, "num_experts": 1, "top_k": 1}  # [1, 2H, D] experts: fewer rows than ranks, sharded on dim 1


@pytest.mark.parametrize(
    ("ac", "config", "ep", "meta", "fused", "compile"),
    [
        ("none", CONFIG, 1, False, False, False),
        ("full", CONFIG, 1, True, False, False),
        ("none", ONE_EXPERT, 1, True, False, False),
        ("none", CONFIG, 2, False, False, False),
        ("full", CONFIG, 2, True, False, False),
        ("full", CONFIG, 1, False, True, {"backend": "aot_eager"}),
    ],
)
def test_fsdp2_on_two_ranks_equals_one_process(tmp_path, ac, config, ep, meta, fused, compile):
    """Same init, same global batch (each rank half of it): the losses of 3 AdamW steps and the updated weights
    agree to 1e-5 relative in fp32 (‖Δw‖/‖w‖ per tensor), with the MoE router's statistics global (MiniMax's global
    router); with ``ep=2`` each rank holds half of every layer's experts and exchanges tokens by all-to-all; with
    ``meta`` the sharded model is built on the meta device and initialised shard by shard (:func:`materialize_`);
    ``fused``: the sharded model trains through the fused LM-head loss; ``compile``: its checkpointed blocks are
    compiled (dynamo + AOTAutograd; no Inductor code generation, to stay fast on the CPU) before FSDP2."""
    torch.manual_seed(0)
    reference = HybridLM(config)
    expected_losses, expected_grads = train_steps(reference, global_batch())
    out = tmp_path / "fsdp.pt"
    args = (2, str(tmp_path / "init"), str(out), ac, config, ep, meta, fused, compile)
    mp.start_processes(fsdp_worker, args=args, nprocs=2, start_method="spawn")
    result = torch.load(out, weights_only=False)
    torch.testing.assert_close(result["losses"], expected_losses, rtol=1e-5, atol=0)
    assert set(result["grads"]) == set(expected_grads)
    for key, value in expected_grads.items():
        torch.testing.assert_close(result["grads"][key], value, rtol=1e-5, atol=1e-7, msg=key)
    expected = reference.state_dict()
    assert set(result["state"]) == set(expected)
    for key, value in expected.items():  # relative to the tensor's norm: Adam turns fp32 reduction-order noise in
        error = (result["state"][key] - value).norm() / value.norm()  # near-zero gradients into 1e-6 steps
        assert error <= 1e-5, (key, error.item())


def test_activation_checkpointing_changes_no_gradient():
    torch.manual_seed(0)
    plain = HybridLM(CONFIG)
    checkpointed = HybridLM(CONFIG)
    checkpointed.load_state_dict(plain.state_dict())
    assert apply_activation_checkpointing(checkpointed, "full") == 4
    assert apply_activation_checkpointing(HybridLM(CONFIG), "selective") == 2
    ids = global_batch()
    for model in (plain, checkpointed):
        logits = model(ids[:, :-1])
        (F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten()) + model.moe_loss()).backward()
    grads = {n: p.grad for n, p in checkpointed.named_parameters()}
    for name, param in plain.named_parameters():
        wrapped = next(k for k in grads if k.replace("._checkpoint_wrapped_module", "") == name)
        torch.testing.assert_close(grads[wrapped], param.grad, rtol=0, atol=0, msg=name)
    assert set(checkpointed.state_dict()) == set(plain.state_dict())  # checkpoints are interchangeable


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"activation_checkpointing": "some"},
            r"strategy\.activation_checkpointing='some' is unknown; valid: none, full",
        ),
        ({"param_dtype": "fp8"}, r"strategy\.param_dtype='fp8' is unknown; valid: auto, bf16, fp32"),
        ({"expert_parallel_size": 0}, r"strategy\.expert_parallel_size=0 must be ≥ 1"),
    ],
)
def test_bad_plans_name_the_key(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ParallelPlan(**kwargs)


def test_shard_dim_moves_off_a_short_first_axis():
    from zoo.parallel.fsdp import shard_dim

    assert shard_dim((32, 4096, 6144), 64) == 2 and shard_dim((32, 4096), 16) == 0 and shard_dim((8,), 64) == 0
    assert shard_dim((1, 2, 3), 2) == 1 and shard_dim((1, 3, 5), 2) == 0  # a later dim only if it splits evenly


def test_expert_parallel_size_must_divide_world_and_experts():
    model = HybridLM(CONFIG)
    with pytest.raises(ValueError, match=r"expert_parallel_size=3 does not divide the world size 4; valid: 1, 2, 4"):
        ParallelPlan(expert_parallel_size=3).check(model, 4)
    with pytest.raises(ValueError, match=r"expert_parallel_size=8 does not divide the 4 experts per MoE layer"):
        ParallelPlan(expert_parallel_size=8).check(model, 8)
    ParallelPlan(expert_parallel_size=2).check(model, 4)
    ParallelPlan().check(model, 8)  # expert_parallel_size=1 fits any world


def vision_net():
    from zoo.registries import BACKBONE

    torch.manual_seed(0)  # channels-last, as VisionTask builds it (both sides: CPU kernels differ by memory format)
    net = BACKBONE.build("resnet20", num_classes=10, in_chans=3, ca="mca", widths=[4, 8, 8])
    # fp64: BatchNorm over 4-image halves and MCA's skew amplify fp32's summation-order differences between CPUs
    # (1e-3 after 3 steps on some); in fp64 the two sides agree to rounding on any machine
    return net.to(dtype=torch.float64, memory_format=torch.channels_last)


def vision_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.randn(8, 3, 16, 16, generator=g, dtype=torch.float64), torch.randint(0, 10, (8,), generator=g)


def vision_steps(net, halves) -> None:
    """3 SGD steps; the loss is the mean of the halves' losses, each half through its own BatchNorm statistics
    (what two data-parallel ranks compute)."""
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for _ in range(STEPS):
        loss = sum(F.cross_entropy(net(x), y) for x, y in halves) / len(halves)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def vision_worker(rank: int, world: int, init_file: str, out: str) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.device_mesh import init_device_mesh

    from zoo.parallel import parallelize_units

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        net = vision_net()
        stages = [m for m in net.children() if isinstance(m, torch.nn.Sequential)]
        blocks = [block for stage in stages for block in stage.children()]
        parallelize_units(net, blocks, init_device_mesh("cpu", (world,)), ParallelPlan(activation_checkpointing="full"))
        images, labels = vision_batch()
        vision_steps(net, [(images.chunk(world)[rank], labels.chunk(world)[rank])])
        state = get_model_state_dict(net, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if rank == 0:
            torch.save(state, out)
        dist.barrier()  # no rank tears gloo down while the other still has collectives in flight
    finally:
        dist.destroy_process_group()


def test_fsdp2_of_a_vision_backbone_equals_data_parallel(tmp_path):
    """``task=vision`` under ``strategy=fsdp2`` (:func:`parallelize_units` over the residual blocks, activation
    checkpointing on): after 3 SGD steps on 2 ranks the weights equal one process's that averages the two halves'
    losses (each half normalised by its own BatchNorm statistics, as on two ranks)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank: AVX2 CPUs' channels-last convolutions sum in a thread-dependent order
    try:
        reference = vision_net()
        images, labels = vision_batch()
        vision_steps(reference, list(zip(images.chunk(2), labels.chunk(2), strict=True)))
    finally:
        torch.set_num_threads(threads)
    out = tmp_path / "vision.pt"
    mp.start_processes(vision_worker, args=(2, str(tmp_path / "init"), str(out)), nprocs=2, start_method="spawn")
    state = torch.load(out, weights_only=False)
    for key, value in reference.state_dict().items():
        if key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            continue  # each rank's own statistics (as under DDP)
        got = state[key.replace("._checkpoint_wrapped_module", "")] if key in state else state[key]
        torch.testing.assert_close(got, value, rtol=1e-5, atol=1e-6, msg=key)


def test_compile_units_compiles_each_block_in_place():
    """``model.compile=true``: each block (its checkpoint wrapper, when it has one) is compiled where it sits, once;
    parameter names, outputs and gradients are the eager model's."""
    from zoo.parallel import compile_units
    from zoo.parallel.compile import is_compiled

    torch.manual_seed(0)
    plain = HybridLM(CONFIG)
    model = HybridLM(CONFIG)
    model.load_state_dict(plain.state_dict())
    apply_activation_checkpointing(model, "selective")  # blocks 1 and 3 wrapped
    assert compile_units(model, model.blocks(), backend="eager") == 4
    assert compile_units(model, model.blocks(), backend="eager") == 0  # idempotent
    wrapped = [m for m in model.model.layers if hasattr(m, "_checkpoint_wrapped_module")]
    assert len(wrapped) == 2 and all(is_compiled(m) for m in wrapped)
    assert all(is_compiled(m) for m in model.model.layers)
    assert set(model.state_dict()) == set(plain.state_dict())
    ids = global_batch()
    for m in (plain, model):
        m.forward_loss(ids[:, :-1], ids[:, 1:]).backward()
    grads = {n.replace("._checkpoint_wrapped_module", ""): p.grad for n, p in model.named_parameters()}
    for name, param in plain.named_parameters():
        torch.testing.assert_close(grads[name], param.grad, rtol=1e-5, atol=1e-7, msg=name)
