"""Feed-forward blocks: dense SwiGLU and MiniMax-01's mixture of experts (routing, capacity, losses, both impls)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from zoo.ffn import (
    MoE,
    SwiGLU,
    capacity_mask,
    expert_capacity,
    fused_available,
    load_balancing_loss,
    router_z_loss,
)
from zoo.registries import FFN

CUDA = torch.cuda.is_available()
ROOT = Path(__file__).resolve().parents[2]


def make_moe(dim=16, hidden=24, experts=4, top_k=2, dtype=torch.float64, std=0.3, seed=0, **kw) -> MoE:
    torch.manual_seed(seed)
    module = MoE(dim, hidden, num_experts=experts, top_k=top_k, dtype=dtype, **kw)
    module.reset_parameters(std)  # larger than 0.02 so that routing and expert outputs are far from trivial
    return module


def naive_moe(module: MoE, x: torch.Tensor, capacity: int | None = None) -> torch.Tensor:
    """The MoE written token by token (minimax.md §3): fp-typed router, top-k by a full sort, renormalised weights,
    SwiGLU experts from the stacked weights; with ``capacity``, assignments served first choices first, then by
    token, and those past ``capacity`` of their expert dropped (weights not renormalised)."""
    shape = x.shape
    x = x.reshape(-1, shape[-1])
    rdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    h = module.hidden_dim
    gu, down = module.experts.gate_up_proj, module.experts.down_proj
    choices = []
    for t in range(x.shape[0]):
        p = torch.softmax(module.gate.weight.to(rdt) @ x[t].to(rdt), dim=0)
        order = sorted(range(module.num_experts), key=lambda e: -float(p[e].detach()))[: module.top_k]
        total = sum(p[e] for e in order)
        choices.append([(e, p[e] / total) for e in order])
    kept = {(t, s) for t in range(x.shape[0]) for s in range(module.top_k)}
    if capacity is not None:
        used = [0] * module.num_experts
        for s in range(module.top_k):
            for t in range(x.shape[0]):
                e = choices[t][s][0]
                if used[e] >= capacity:
                    kept.discard((t, s))
                used[e] += 1
    rows = []
    for t in range(x.shape[0]):
        y = torch.zeros_like(x[t])
        for s, (e, w) in enumerate(choices[t]):
            if (t, s) in kept:
                a = F.silu(gu[e, :h] @ x[t]) * (gu[e, h:] @ x[t])
                y = y + (w * (down[e] @ a)).to(x.dtype)
        rows.append(y)
    return torch.stack(rows).reshape(shape)


# --------------------------------------------------------------------------------------------------- dense


def test_dense_matches_formula_and_registry_names():
    torch.manual_seed(0)
    module = FFN.build("dense", 16, 40, dtype=torch.float64)
    assert isinstance(module, SwiGLU) and isinstance(FFN.build("swiglu", 8, 8), SwiGLU)
    assert {n for n, _ in module.named_parameters()} == {"w1.weight", "w2.weight", "w3.weight"}
    assert module.w1.weight.shape == module.w3.weight.shape == (40, 16) and module.w2.weight.shape == (16, 40)
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    want = (F.silu(x @ module.w1.weight.T) * (x @ module.w3.weight.T)) @ module.w2.weight.T
    assert torch.allclose(module(x), want, atol=1e-12)
    assert all(m.bias is None for m in (module.w1, module.w2, module.w3))
    moe = FFN.build("moe", 16, 32, num_experts=4, device="meta")
    assert isinstance(moe, MoE) and all(p.device.type == "meta" for p in moe.parameters())
    assert {"dense", "swiglu", "moe"} <= set(FFN.names())


# --------------------------------------------------------------------------------------------------- MoE forward


@pytest.mark.parametrize(
    ("experts", "top_k", "shape"), [(4, 1, (13,)), (4, 2, (2, 7)), (5, 2, (3, 5)), (5, 1, (1, 11)), (5, 3, (9,))]
)
def test_moe_matches_per_token_reference(experts, top_k, shape):
    module = make_moe(experts=experts, top_k=top_k)
    x = torch.randn(*shape, 16, dtype=torch.float64)
    y = module(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.allclose(y, naive_moe(module, x), atol=1e-12)
    assert float(module.dropped_fraction) == 0.0
    assert math.isclose(float(module.expert_load.sum()), 1.0, abs_tol=1e-6)


@pytest.mark.parametrize("impl", ["grouped_mm", "fused"])
@pytest.mark.parametrize(("experts", "top_k"), [(4, 2), (5, 1), (5, 2)])
def test_grouped_mm_matches_loop_on_cpu(experts, top_k, impl):
    """``grouped_mm`` also runs on the CPU (fp32) in torch ≥ 2.10: forward and all gradients equal the loop (and so
    do ``"fused"``'s, here on its PyTorch reference; its Triton kernels: tests/kernels/test_moe.py)."""
    loop = make_moe(dim=16, hidden=24, experts=experts, top_k=top_k, dtype=torch.float32, impl="loop")
    grouped = make_moe(dim=16, hidden=24, experts=experts, top_k=top_k, dtype=torch.float32, impl=impl)
    grouped.load_state_dict(loop.state_dict())
    x = torch.randn(3, 7, 16)
    grad = torch.randn(3, 7, 16)
    results = []
    for module in (loop, grouped):
        xi = x.clone().requires_grad_()
        y = module(xi)
        torch.autograd.backward([y, module.loss], [grad, torch.ones(())])
        results.append((y, xi.grad, *(p.grad for p in module.parameters())))
    for a, b in zip(*results):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("experts", "top_k", "factor"), [(4, 2, None), (5, 1, None), (4, 2, 0.5)])
def test_dense_impl_matches_loop_forward_and_backward(experts, top_k, factor):
    """``impl="dense"`` (every expert on every token, routed weights scattered to ``[N, E]``): the loop's output and
    every gradient (input, experts, router) in fp64, with and without a capacity limit."""
    loop = make_moe(experts=experts, top_k=top_k, capacity_factor=factor, impl="loop", dtype=torch.float64)
    dense = make_moe(experts=experts, top_k=top_k, capacity_factor=factor, impl="dense", dtype=torch.float64)
    dense.load_state_dict(loop.state_dict())
    x = torch.randn(3, 9, 16, dtype=torch.float64)
    grad = torch.randn(3, 9, 16, dtype=torch.float64)
    results = []
    for module in (loop, dense):
        xi = x.clone().requires_grad_()
        y = module(xi)
        torch.autograd.backward([y, module.loss], [grad, torch.ones((), dtype=torch.float64)])
        results.append((y, xi.grad, *(p.grad for p in module.parameters())))
    for a, b in zip(*results, strict=True):
        assert torch.allclose(a, b, atol=1e-12)
    assert float(dense.dropped_fraction) == float(loop.dropped_fraction)


def test_moe_gradients_match_reference_and_gradcheck():
    module = make_moe(experts=5, top_k=2)
    x = torch.randn(2, 6, 16, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(2, 6, 16, dtype=torch.float64)
    params = [x, module.gate.weight, module.experts.gate_up_proj, module.experts.down_proj]
    got = torch.autograd.grad(module(x), params, grad)
    want = torch.autograd.grad(naive_moe(module, x), params, grad)
    for g, w in zip(got, want):
        assert torch.allclose(g, w, atol=1e-10)
    assert got[1].abs().sum() > 0  # the router learns through the combine weights

    tiny = make_moe(dim=4, hidden=6, experts=3, top_k=2, z_loss_coef=0.1)
    names = ["gate.weight", "experts.gate_up_proj", "experts.down_proj"]
    weights = [dict(tiny.named_parameters())[n].detach().clone().requires_grad_() for n in names]

    def call(x, *w):
        y = torch.func.functional_call(tiny, dict(zip(names, w)), (x,))
        return y, tiny.loss

    xt = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(call, (xt, *weights))


# --------------------------------------------------------------------------------------------------- capacity


def routed_module(choices_logits: list[list[float]], top_k: int = 2, **kw) -> tuple[MoE, torch.Tensor]:
    """A MoE whose token t has router logits ``choices_logits[t]``: x_t is the t-th basis vector and column t of
    the router weight holds the logits."""
    n, e = len(choices_logits), len(choices_logits[0])
    module = make_moe(dim=8, hidden=8, experts=e, top_k=top_k, **kw)
    x = torch.zeros(n, 8, dtype=torch.float64)
    x[range(n), range(n)] = 1.0
    with torch.no_grad():
        module.gate.weight.zero_()
        module.gate.weight[:, :n] = torch.tensor(choices_logits, dtype=torch.float64).T
    return module, x


def test_capacity_hand_built_case():
    # choices (first, second): t0 (1, 0), t1 (0, 2), t2 (0, 1), t3 (2, 1); E = 3, k = 2, N = 4
    logits = [[1.0, 2.0, 0.0], [2.0, 0.0, 1.0], [2.0, 1.0, 0.0], [0.0, 1.0, 2.0]]
    # capacity ⌈0.75 · 4 · 2 / 3⌉ = 2. Expert 0 serves t1·s0 and t2·s0 (first choices first) and drops t0·s1,
    # although t0 comes first by token order; expert 1 serves t0·s0, t2·s1 and drops t3·s1; expert 2 keeps both.
    module, x = routed_module(logits, capacity_factor=0.75)
    assert expert_capacity(4, 3, 2, 0.75) == 2
    keep = capacity_mask(torch.tensor([[1, 0], [0, 2], [0, 1], [2, 1]]), 3, 2)
    assert keep.tolist() == [[True, False], [True, True], [True, True], [True, False]]
    y = module(x)
    assert math.isclose(float(module.dropped_fraction), 2 / 8)
    dropless, _ = routed_module(logits)
    dropless.load_state_dict(module.state_dict())
    full = dropless(x)
    assert torch.allclose(y[1:3], full[1:3], atol=1e-14)  # t1, t2 untouched
    # t0 keeps only its first choice (expert 1) with its original renormalised weight
    p = torch.softmax(torch.tensor(logits[0], dtype=torch.float64), 0)
    w = p[1] / (p[1] + p[0])
    h = module.hidden_dim
    gu, down = module.experts.gate_up_proj, module.experts.down_proj
    ffn1 = down[1] @ (F.silu(gu[1, :h] @ x[0]) * (gu[1, h:] @ x[0]))
    assert torch.allclose(y[0], w * ffn1, atol=1e-14)
    assert torch.allclose(y, naive_moe(module, x, capacity=2), atol=1e-14)


@pytest.mark.parametrize("impl", ["loop", "grouped_mm", "fused", "dense"])
@pytest.mark.parametrize(("experts", "top_k", "factor"), [(4, 2, 0.5), (5, 2, 1.0), (5, 1, 1.25), (4, 3, 0.3)])
def test_capacity_matches_reference(impl, experts, top_k, factor):
    dtype = torch.float32 if impl in ("grouped_mm", "fused") else torch.float64
    module = make_moe(experts=experts, top_k=top_k, capacity_factor=factor, impl=impl, dtype=dtype)
    x = torch.randn(2, 13, 16, dtype=dtype)
    y = module(x)
    capacity = expert_capacity(26, experts, top_k, factor)
    want = naive_moe(module, x, capacity)
    assert torch.allclose(y, want, atol=1e-5 if dtype == torch.float32 else 1e-12)
    naive_dropped, counts = 0, [0] * experts
    for e in torch.argsort(-module.route(x.reshape(-1, 16))[1], dim=-1)[:, :top_k].T.reshape(-1).tolist():
        naive_dropped += counts[e] >= capacity
        counts[e] += 1
    assert naive_dropped > 0 or factor > 1
    assert math.isclose(float(module.dropped_fraction), naive_dropped / (26 * top_k), abs_tol=1e-7)


def test_capacity_mask_random_against_python_loop():
    gen = torch.Generator().manual_seed(1)
    for n, e, k, c in [(37, 5, 2, 9), (37, 5, 2, 3), (64, 8, 1, 5), (10, 4, 3, 2), (1, 4, 2, 1)]:
        index = torch.stack([torch.randperm(e, generator=gen)[:k] for _ in range(n)])
        used, want = [0] * e, torch.zeros(n, k, dtype=torch.bool)
        for s in range(k):
            for t in range(n):
                want[t, s] = used[index[t, s]] < c
                used[index[t, s]] += 1
        assert torch.equal(capacity_mask(index, e, c), want)


def test_large_capacity_equals_dropless():
    module = make_moe(experts=5, capacity_factor=100.0)
    dropless = make_moe(experts=5)
    x = torch.randn(4, 9, 16, dtype=torch.float64)
    assert torch.equal(module(x), dropless(x))
    assert float(module.dropped_fraction) == 0.0


# --------------------------------------------------------------------------------------------------- losses


# router probabilities of 3 tokens over E = 4; top-2 sets {0, 1}, {3, 2}, {0, 2}: f = (2, 1, 2, 1)/3,
# P = (1.2, 0.6, 0.65, 0.55)/3, Σ f·P = 4.85/9
PROBS = [[0.5, 0.3, 0.1, 0.1], [0.1, 0.2, 0.3, 0.4], [0.6, 0.1, 0.25, 0.05]]
SHIFTS = [1.0, -2.0, 0.5]  # logits = log p + shift: same softmax, logsumexp = shift


@pytest.mark.parametrize(("kind", "want"), [("switch", 4 * 4.85 / 9), ("gshard", 4.85 / 36), ("paper", 4.85 / 36)])
def test_aux_loss_hand_computed(kind, want):
    probs = torch.tensor(PROBS, dtype=torch.float64)
    index = torch.topk(probs, 2).indices
    assert math.isclose(float(load_balancing_loss(probs, index, 4, kind)), want, rel_tol=1e-12)
    logits = [[math.log(p) + s for p in row] for row, s in zip(PROBS, SHIFTS)]
    module, x = routed_module(logits, aux_loss_type=kind, aux_loss_coef=0.01, z_loss_coef=0.1)
    module(x)
    assert math.isclose(module.aux_loss.item(), want, rel_tol=1e-9)
    assert math.isclose(module.z_loss.item(), (1 + 4 + 0.25) / 3, rel_tol=1e-9)
    assert math.isclose(module.loss.item(), 0.01 * want + 0.1 * 1.75, rel_tol=1e-9)
    assert torch.allclose(module.expert_load, torch.tensor([2, 1, 2, 1]) / 6)
    assert module.expert_load.dtype == torch.float32 and not module.expert_load.requires_grad


def test_aux_loss_has_router_gradient_only():
    module = make_moe(experts=5, z_loss_coef=0.5)
    module(torch.randn(3, 7, 16, dtype=torch.float64))
    module.loss.backward()
    assert module.gate.weight.grad.abs().sum() > 0
    assert module.experts.gate_up_proj.grad is None and module.experts.down_proj.grad is None
    assert math.isclose(float(router_z_loss(torch.zeros(2, 4))), math.log(4) ** 2, rel_tol=1e-6)


def test_losses_computed_in_eval_and_jitter_only_in_training():
    module = make_moe(experts=5, jitter_noise=0.5).eval()
    x = torch.randn(20, 16, dtype=torch.float64)
    y = module(x)
    assert module.aux_loss is not None and torch.equal(y, module(x))
    assert torch.allclose(y, naive_moe(module, x), atol=1e-12)
    module.train()
    assert not torch.equal(module(x), y)  # the router saw multiplicative noise


def test_bad_keys_raise():
    with pytest.raises(ValueError, match=r"aux_loss_type 'gshrad'.*gshard, paper"):
        MoE(8, 8, aux_loss_type="gshrad")
    with pytest.raises(ValueError, match=r"impl 'triton'.*auto, dense, fused, grouped_mm, loop"):
        MoE(8, 8, impl="triton")
    with pytest.raises(ValueError, match="multiples of 8"):
        MoE(12, 8, impl="grouped_mm")
    with pytest.raises(ValueError, match="impl='fused' needs dim and hidden_dim to be multiples of 8"):
        MoE(8, 12, impl="fused")
    with pytest.raises(ValueError, match=r"MoE impl 'auto'. Valid choices: dense, fused, grouped_mm, loop"):
        MoE(8, 8).experts(torch.zeros(2, 8), torch.zeros(2, 2, dtype=torch.long), torch.ones(2, 2), impl="auto")
    with pytest.raises(ValueError, match="top_k"):
        MoE(8, 8, num_experts=2, top_k=3)
    with pytest.raises(ValueError, match="aux_loss_type 'z'"):
        load_balancing_loss(torch.rand(2, 3), torch.zeros(2, 1, dtype=torch.long), 3, "z")


def test_autocast_keeps_router_fp32_and_output_dtype():
    module = make_moe(dtype=torch.float32, experts=4, std=0.02)
    x = torch.randn(2, 5, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = module(x)
        logits = module.route(x.reshape(-1, 16))[0]
    assert y.dtype == torch.float32 and logits.dtype == torch.float32
    assert torch.allclose(logits, x.reshape(-1, 16) @ module.gate.weight.T, atol=1e-6)
    assert module.plan(x) == ("loop", torch.float32)
    assert (y - module(x)).abs().max() < 1e-3  # the experts ran in bf16


# --------------------------------------------------------------------------------------------------- peers, GPU, bench


def test_matches_hugging_face_minimax_block():
    pytest.importorskip("transformers")
    from transformers import MiniMaxConfig
    from transformers.models.minimax.modeling_minimax import MiniMaxSparseMoeBlock, load_balancing_loss_func

    dim, hidden, experts, top_k = 32, 48, 5, 2
    config = MiniMaxConfig(
        hidden_size=dim, intermediate_size=hidden, num_local_experts=experts, num_experts_per_tok=top_k
    )
    torch.manual_seed(0)
    hf = MiniMaxSparseMoeBlock(config).eval()
    ours = make_moe(dim=dim, hidden=hidden, experts=experts, top_k=top_k, dtype=torch.float32, std=0.1).eval()
    assert {n: p.shape for n, p in hf.named_parameters()} == {n: p.shape for n, p in ours.named_parameters()}
    hf.load_state_dict(ours.state_dict())
    x = torch.randn(3, 11, dim)
    with torch.no_grad():
        want = hf(x.clone())
        logits, *_ = hf.gate(x.reshape(-1, dim))
    assert (ours(x) - want).abs().max() <= 1e-6
    hf_aux = load_balancing_loss_func((logits,), experts, top_k)
    assert math.isclose(ours.aux_loss.item(), float(hf_aux), rel_tol=1e-6)
    rebuilt = experts * (top_k * ours.expert_load * ours.router_prob_mean).sum()  # HF's form from the statistics
    assert math.isclose(rebuilt.item(), float(hf_aux), rel_tol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU: grouped_mm against the loop in bf16")
@pytest.mark.parametrize("impl", ["grouped_mm", "fused"])
@pytest.mark.parametrize("capacity_factor", [None, 1.0])
def test_grouped_mm_matches_loop_bf16_cuda(capacity_factor, impl):
    torch.manual_seed(0)
    kw = dict(num_experts=8, top_k=2, capacity_factor=capacity_factor, device="cuda", dtype=torch.bfloat16)
    loop, grouped = MoE(64, 128, impl="loop", **kw), MoE(64, 128, impl=impl, **kw)
    grouped.load_state_dict(loop.state_dict())
    x = torch.randn(4, 257, 64, device="cuda", dtype=torch.bfloat16)
    auto = "fused" if fused_available() else "grouped_mm"
    assert grouped.plan(x) == (impl, torch.bfloat16) and MoE(64, 128, **kw).plan(x) == (auto, torch.bfloat16)
    grad = torch.randn_like(x)
    results = []
    for module in (loop, grouped):
        xi = x.clone().requires_grad_()
        y = module(xi)
        torch.autograd.backward([y, module.loss], [grad, torch.ones((), device="cuda")])
        results.append((y, xi.grad, *(p.grad for p in module.parameters())))
    for a, b in zip(*results):
        rel = (a.float() - b.float()).norm() / b.float().norm()
        assert rel < 2e-2, rel
    assert torch.equal(loop.expert_load, grouped.expert_load)
    # fp32 parameters under bf16 autocast take the same path
    fp32 = MoE(64, 128, **{**kw, "dtype": torch.float32})
    fp32.load_state_dict(loop.state_dict())
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert fp32.plan(x.float()) == (auto, torch.bfloat16)
        y = fp32(x.float())
    assert y.dtype == torch.float32
    assert (y - results[0][0].float()).norm() / y.norm() < 2e-2


def test_bench_runs_on_cpu(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_moe", ROOT / "tools/bench/moe.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "moe.json"
    argv = ["--device", "cpu", "--tokens", "64", "--dim", "32", "--hidden", "64", "--experts", "4"]
    result = bench.main([*argv, "--warmup", "0", "--repeats", "1", "--output", str(out)])
    rows = {r["impl"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"dense", "loop", "grouped_mm", "fused"} and result["rows"]
    assert all(r["tokens_per_s"] > 0 for r in rows.values()) and rows["dense"]["ratio_vs_dense"] == 1.0


def test_bench_profile_splits_the_step_by_kind_of_op(tmp_path):
    """``--profile``: each row's step time by category; the dense SwiGLU's includes its GEMMs, the MoE's its routing."""
    spec = importlib.util.spec_from_file_location("bench_moe", ROOT / "tools/bench/moe.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    argv = ["--device", "cpu", "--tokens", "64", "--dim", "32", "--hidden", "64", "--experts", "4", "--profile"]
    rows = {
        r["impl"]: r
        for r in bench.main([*argv, "--warmup", "0", "--repeats", "2", "--impls", "grouped_mm", "fused"])["rows"]
    }
    assert set(rows) == {"dense", "grouped_mm", "fused"}
    for row in rows.values():
        assert set(row["profile_ms"]) == set(bench.CATEGORIES) and all(v >= 0 for v in row["profile_ms"].values())
        assert row["syncs_per_step"] == 0  # no CUDA runtime on the CPU
        assert row["profile_ms"]["gemm"] > 0 and row["profile_ms"]["elementwise"] > 0
    assert rows["grouped_mm"]["profile_ms"]["routing"] > 0 and rows["dense"]["profile_ms"]["routing"] == 0
    assert bench.op_category("aten::_grouped_mm") == "gemm" and bench.op_category("aten::topk") == "routing"
    assert bench.op_category("aten::silu_backward") == "elementwise" and bench.op_category("aten::foo") == "other"
    assert bench.op_category("triton_poi_fused_mul_silu_0") == "elementwise"
    assert bench.op_category("_moe_swiglu_bwd_kernel") == "elementwise"
    assert {bench.op_category(f"_moe_{name}_kernel") for name in ("dispatch", "combine", "combine_bwd")} == {"routing"}


def test_bench_counts_host_syncs_inside_steps_only():
    """``syncs_per_step`` counts the blocking CUDA runtime calls that start inside a step's range."""
    from types import SimpleNamespace

    spec = importlib.util.spec_from_file_location("bench_moe", ROOT / "tools/bench/moe.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    cpu = torch.autograd.DeviceType.CPU

    def event(name, start, end, device_type=cpu):
        return SimpleNamespace(name=name, time_range=SimpleNamespace(start=start, end=end), device_type=device_type)

    events = [
        event(bench.STEP_RANGE, 0, 10),
        event("cudaStreamSynchronize", 3, 4),  # .item() in step 1
        event("cudaLaunchKernel", 5, 6),
        event(bench.STEP_RANGE, 20, 30),
        event("cudaMemcpy", 21, 22),
        event(bench.STEP_RANGE, 20, 30, torch.autograd.DeviceType.CUDA),  # the same range on the GPU timeline
        event("cudaDeviceSynchronize", 35, 36),  # the profiler's own, after the steps
    ]
    assert bench.count_syncs(events) == 2


def test_empty_input():
    module = make_moe(experts=5, capacity_factor=1.0)
    y = module(torch.zeros(2, 0, 16, dtype=torch.float64))
    assert y.shape == (2, 0, 16) and module.loss.item() == 0.0 and module.expert_load.shape == (5,)
