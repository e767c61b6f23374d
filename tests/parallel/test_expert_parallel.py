"""Expert parallelism on 2 CPU ranks (gloo): the forward, the input gradient and every parameter gradient equal
those of the unsharded MoE layer, dropless and with a capacity factor, in fp32 to 1e-6."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from zoo.errors import ConfigError
from zoo.ffn.moe import MoE
from zoo.parallel.expert import apply_expert_parallel, expert_parallel_mesh

DIM, HIDDEN, EXPERTS, TOKENS = 16, 24, 4, 13  # 13 tokens per rank: uneven splits, some experts may get none


class _OneLayer(torch.nn.Module):
    """The ``moe_layers()`` a causal LM exposes, around a single layer."""

    def __init__(self, layer: MoE) -> None:
        super().__init__()
        self.layer = layer

    def moe_layers(self) -> list[MoE]:
        return [self.layer]


def make_layer(capacity_factor: float | None, impl: str) -> MoE:
    torch.manual_seed(0)
    return MoE(DIM, HIDDEN, num_experts=EXPERTS, top_k=2, capacity_factor=capacity_factor, impl=impl)


def rank_inputs(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank ``rank``'s tokens and the output gradient it back-propagates (different on every rank)."""
    g = torch.Generator().manual_seed(100 + rank)
    return torch.randn(TOKENS, DIM, generator=g), torch.randn(TOKENS, DIM, generator=g)


def run_layer(layer: MoE, x: torch.Tensor, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
    x = x.clone().requires_grad_(True)
    y = layer(x)
    (y * grad).sum().backward()
    grads = {n: p.grad.to_local() if hasattr(p.grad, "to_local") else p.grad for n, p in layer.named_parameters()}
    return y.detach(), x.grad, grads


def ep_worker(rank: int, world: int, init_file: str, out: str, capacity_factor: float | None, impl: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        layer = make_layer(capacity_factor, impl)
        mesh = expert_parallel_mesh("cpu", world, world)
        assert apply_expert_parallel(_OneLayer(layer), mesh["ep"]) == 1
        y, gx, grads = run_layer(layer, *rank_inputs(rank))
        torch.save({"y": y, "gx": gx, "grads": grads, "dropped": layer.dropped_fraction}, f"{out}.{rank}")
        dist.barrier()  # no rank tears gloo down while the other still has collectives in flight
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize(("capacity_factor", "impl"), [(None, "loop"), (0.6, "loop"), (None, "grouped_mm")])
def test_expert_parallel_equals_unsharded_moe(tmp_path, capacity_factor, impl):
    """Rank r's output and input gradient equal the unsharded layer's on rank r's tokens; the router gradient
    equals the sum over ranks of the unsharded ones (the rank's own tokens' part; data parallelism sums it), and
    the gradient of the experts rank r holds equals the unsharded gradient of those experts summed over both
    ranks' tokens. With ``capacity_factor=0.6`` some assignments are dropped (and not sent)."""
    world = 2
    out = str(tmp_path / "ep")
    mp.start_processes(
        ep_worker, args=(world, str(tmp_path / "init"), out, capacity_factor, impl), nprocs=world, start_method="spawn"
    )
    reference = [run_layer(make_layer(capacity_factor, impl), *rank_inputs(r)) for r in range(world)]
    local = EXPERTS // world
    for rank in range(world):
        got = torch.load(f"{out}.{rank}", weights_only=False)
        y, gx, _ = reference[rank]
        torch.testing.assert_close(got["y"], y, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(got["gx"], gx, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(got["grads"]["gate.weight"], reference[rank][2]["gate.weight"], rtol=1e-6, atol=1e-6)
        for name in ("experts.gate_up_proj", "experts.down_proj"):
            summed = sum(ref[2][name] for ref in reference)[rank * local : (rank + 1) * local]
            torch.testing.assert_close(got["grads"][name], summed, rtol=1e-6, atol=1e-6)
        if capacity_factor is not None:
            assert got["dropped"] > 0  # the capacity case really drops assignments


def test_expert_parallel_size_must_divide_the_experts():
    """A mesh whose size does not divide a layer's experts is refused, naming the key (checked before any
    collective, so no process group is needed)."""

    class _FakeMesh:
        def size(self) -> int:
            return 3

    with pytest.raises(ConfigError, match=r"strategy.expert_parallel_size=3 does not divide the 4 experts"):
        apply_expert_parallel(_OneLayer(make_layer(None, "loop")), _FakeMesh())
