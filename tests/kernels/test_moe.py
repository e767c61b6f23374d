"""Routed SwiGLU experts (``kernels.moe``): the PyTorch reference against a per-token formula in fp64; the Triton
path (grouped GEMMs + fused kernels; under the CPU interpreter here, natively on a GPU) and the dispatch against
the fp64 reference, forward and every gradient, on odd sizes with an empty expert and repeated routing; the
SwiGLU kernel alone; ``MoE(impl="fused")`` against the loop; a fullgraph trace under ``torch.compile``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import kernels.moe as moe_kernels
from kernels.moe import (
    moe_experts,
    moe_experts_reference,
    resolve_backend,
    swiglu,
    swiglu_reference,
    unsupported_reason,
)
from zoo.ffn import MoE

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
N, E, D, H = 37, 5, 24, 40  # odd token count; D, H multiples of 8 (grouped_mm's 16-byte rows)
#: The Triton path's dtype and tolerance: grouped_mm computes in bf16 on CUDA, in fp32 under the CPU interpreter.
KERNEL_DTYPE = torch.bfloat16 if CUDA else torch.float32
KERNEL_TOL = 2e-2 if CUDA else 1e-5


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


@pytest.fixture
def small_blocks(monkeypatch):
    """Kernel blocks far smaller than the sizes (several row programs, partial column blocks, the column loop)."""
    if not CUDA:
        from kernels.moe import triton as moe_triton

        monkeypatch.setitem(moe_triton.CONFIG, "block_d", 16)
        monkeypatch.setitem(moe_triton.CONFIG, "tile", 64)


def use_backend(monkeypatch, backend: str) -> None:
    """Make ``backend="auto"`` pick ``backend``: Triton on the CPU too (under the interpreter), as it does on CUDA;
    the PyTorch reference through ``ZOO_KERNELS=reference``."""
    if backend == "triton":
        monkeypatch.setattr(moe_kernels, "resolve_backend", lambda backend, tensor, op="moe_experts": "triton")
    else:
        monkeypatch.setenv("ZOO_KERNELS", "reference")


@pytest.fixture
def force_triton(monkeypatch):
    use_backend(monkeypatch, "triton")


def routing_case(case: str, k: int, n: int = N, experts: int = E, seed: int = 0):
    """``(top_k_index [n, k], top_k_weights [n, k] fp64)``. Expert ``experts − 1`` never gets a token;
    ``"ties"`` repeats an expert within a token and sends most tokens to expert 0; ``"dropped"`` zeroes some
    weights (capacity)."""
    g = torch.Generator().manual_seed(seed)
    index = torch.stack([torch.randperm(experts - 1, generator=g)[:k] for _ in range(n)])
    weights = torch.rand(n, k, generator=g, dtype=torch.float64) + 0.1
    if case == "ties":
        index[: n // 2] = 0
        index[n // 2 :, -1] = index[n // 2 :, 0]
    if case == "dropped":
        weights[::3, -1] = 0.0
    return index, weights


def expert_inputs(n=N, experts=E, d=D, h=H, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    gate_up = torch.randn(experts, 2 * h, d, generator=g, dtype=torch.float64) / d**0.5
    down = torch.randn(experts, d, h, generator=g, dtype=torch.float64) / h**0.5
    return x, gate_up, down


def per_token(x, index, weights, gate_up, down):
    """The formula token by token, slot by slot."""
    h = down.shape[-1]
    rows = []
    for t in range(x.shape[0]):
        y = torch.zeros_like(x[t])
        for s in range(index.shape[1]):
            e = int(index[t, s])
            a = F.silu(gate_up[e, :h] @ x[t]) * (gate_up[e, h:] @ x[t])
            y = y + weights[t, s] * (down[e] @ a)
        rows.append(y)
    return torch.stack(rows)


# --------------------------------------------------------------------------------------------- reference
@pytest.mark.parametrize(("k", "case"), [(1, "plain"), (2, "ties"), (3, "dropped")])
def test_reference_is_the_per_token_formula(k, case):
    index, weights = routing_case(case, k)
    x, gate_up, down = expert_inputs()
    got = moe_experts_reference(x, index, weights, gate_up, down)
    assert got.dtype == torch.float64 and got.shape == x.shape
    assert rel(got, per_token(x, index, weights, gate_up, down)) < 1e-13


def test_reference_gradcheck():
    index, weights = routing_case("ties", 2, n=5, experts=3)
    x, gate_up, down = expert_inputs(n=5, experts=3, d=4, h=3)
    leaves = [t.clone().requires_grad_() for t in (x, weights, gate_up, down)]
    assert torch.autograd.gradcheck(lambda a, w, g, d: moe_experts_reference(a, index, w, g, d), leaves)


# --------------------------------------------------------------------------------------------- kernels
def check_against_reference(k, case, backend, dtype=None, tol=None, n=N, experts=E, d=D, h=H):
    """Forward and the gradients of x, top_k_weights, gate_up_proj and down_proj against fp64 (in fp32, or for the
    Triton path :data:`KERNEL_DTYPE`)."""
    if dtype is None:
        dtype, tol = (KERNEL_DTYPE, KERNEL_TOL) if backend == "triton" else (torch.float32, 1e-5)
    index, weights = routing_case(case, k, n=n, experts=experts)
    x, gate_up, down = expert_inputs(n=n, experts=experts, d=d, h=h)
    leaves = [t.clone().requires_grad_() for t in (x, weights, gate_up, down)]
    want = moe_experts_reference(leaves[0], index, *leaves[1:])
    grad = torch.randn(want.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    want_grads = torch.autograd.grad(want, leaves, grad)
    ours = [t.detach().to(DEVICE, dtype).requires_grad_() for t in (x, weights, gate_up, down)]
    ours[1] = weights.to(DEVICE, torch.float32).requires_grad_()  # the router's fp32 weights
    got = moe_experts(ours[0], index.to(DEVICE), *ours[1:], backend=backend)
    assert got.dtype == dtype and got.shape == x.shape
    got_grads = torch.autograd.grad(got, ours, grad.to(DEVICE, dtype))
    assert rel(got, want) < tol, "out"
    for name, a, b in zip(("dx", "dw", "d gate_up_proj", "d down_proj"), got_grads, want_grads, strict=True):
        assert a.dtype == (torch.float32 if name == "dw" else dtype), name
        assert rel(a, b) < tol, name
    # the expert nobody chose gets zero weight gradients
    assert got_grads[2][experts - 1].abs().max() == 0 and got_grads[3][experts - 1].abs().max() == 0
    return got, got_grads


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize(("k", "case"), [(1, "plain"), (2, "plain"), (3, "plain"), (2, "ties"), (3, "dropped")])
def test_forward_and_backward_match_fp64_reference(small_blocks, backend, k, case):
    check_against_reference(k, case, backend)


def test_triton_is_deterministic(small_blocks):
    first = check_against_reference(2, "ties", "triton")
    second = check_against_reference(2, "ties", "triton")
    for a, b in zip([first[0], *first[1]], [second[0], *second[1]], strict=True):
        assert torch.equal(a, b)


def test_triton_casts_to_the_compute_dtype_and_returns_x_dtype(small_blocks):
    """fp32 tokens and weights, bf16 products (autocast-like): output and dx in fp32, expert grads in fp32."""
    index, weights = routing_case("plain", 2)
    x, gate_up, down = expert_inputs()
    want = moe_experts_reference(x.double(), index, weights.double(), gate_up.double(), down.double())
    leaves = [t.float().to(DEVICE).requires_grad_() for t in (x, weights, gate_up, down)]
    got = moe_experts(leaves[0], index.to(DEVICE), *leaves[1:], compute_dtype=torch.bfloat16, backend="triton")
    assert got.dtype == torch.float32 and rel(got, want) < 2e-2
    got.sum().backward()  # CPU: bf16 grouped_mm, the interpreter's bf16 loads and stores
    assert all(t.grad.dtype == torch.float32 for t in leaves)


@pytest.mark.parametrize("shape", [(N, 2 * H), (2, 5, 26), (1, 2)])
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_swiglu_forward_and_backward(small_blocks, shape, backend):
    gu = torch.randn(shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 3
    leaf = gu.clone().requires_grad_()
    want = swiglu_reference(leaf)
    grad = torch.randn(want.shape, dtype=torch.float64)
    (want_grad,) = torch.autograd.grad(want, leaf, grad)
    ours = gu.to(DEVICE, torch.float32).requires_grad_()
    got = swiglu(ours, backend=backend)
    assert got.shape == (*shape[:-1], shape[-1] // 2) and got.dtype == torch.float32
    (got_grad,) = torch.autograd.grad(got, ours, grad.to(DEVICE, torch.float32))
    assert rel(got, want) < 1e-6 and rel(got_grad, want_grad) < 1e-6


def test_dispatch_and_errors(monkeypatch):
    x = torch.randn(4, 8, device=DEVICE)
    assert resolve_backend("torch", x) == "torch"
    assert resolve_backend("auto", x) == ("triton" if x.is_cuda else "torch")
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend("cuda", x)
    assert unsupported_reason(torch.device("cpu"), torch.float64, (8, 8)) is not None
    assert "multiples of 8" in unsupported_reason(torch.device("cpu"), torch.float32, (8, 12))
    assert "bfloat16" in unsupported_reason(torch.device("cuda"), torch.float32, (8, 8))
    assert unsupported_reason(torch.device("cpu"), torch.float32, (8, 16)) is None
    assert unsupported_reason(torch.device("cuda"), torch.float16, (), grouped=False) is None
    index, weights = (t.to(DEVICE) for t in routing_case("plain", 2, n=4, experts=3))
    _, gate_up, down = (t.to(DEVICE) for t in expert_inputs(n=4, experts=3, d=8, h=8))
    with pytest.raises(ValueError, match="cannot run: it computes in float32"):
        moe_experts(x.double(), index, weights, gate_up, down, backend="triton")
    with pytest.raises(ValueError, match=r"gate_up_proj must be \[E, 2H, D\]"):
        moe_experts(x, index, weights, gate_up[:, :, :4], down)
    with pytest.raises(ValueError, match=r"top_k_weights must be \[N, k\]"):
        moe_experts(x, index, weights[:, :1], gate_up, down)
    monkeypatch.setenv("ZOO_KERNELS", "reference")
    assert resolve_backend("triton", x) == "torch" and resolve_backend("auto", x) == "torch"


# --------------------------------------------------------------------------------------------- the MoE layer
def make_pair(capacity_factor, top_k=2, dtype=KERNEL_DTYPE, device=DEVICE):
    torch.manual_seed(0)
    kw = dict(num_experts=E, top_k=top_k, capacity_factor=capacity_factor, dtype=dtype, device=device)
    loop, fused = MoE(D, H, impl="loop", **kw), MoE(D, H, impl="fused", **kw)
    loop.reset_parameters(0.3)
    fused.load_state_dict(loop.state_dict())
    return loop, fused


def step(module, x, grad):
    xi = x.clone().requires_grad_()
    y = module(xi)
    torch.autograd.backward([y, module.loss], [grad, torch.ones((), device=x.device)])
    return [y, xi.grad, *(p.grad for p in module.parameters())]


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize(("capacity_factor", "top_k"), [(None, 2), (None, 1), (0.6, 2), (0.8, 3)])
def test_fused_moe_equals_loop(small_blocks, monkeypatch, backend, capacity_factor, top_k):
    """Output and every gradient (input, router, experts), dropless and with capacity; fp32 on the CPU, bf16 on
    CUDA (the loop in bf16 too)."""
    use_backend(monkeypatch, backend)
    loop, fused = make_pair(capacity_factor, top_k)
    x = torch.randn(N, D, generator=torch.Generator().manual_seed(3)).to(DEVICE, KERNEL_DTYPE)
    grad = torch.randn(N, D, generator=torch.Generator().manual_seed(4)).to(DEVICE, KERNEL_DTYPE)
    assert fused.plan(x) == ("fused", KERNEL_DTYPE)
    want, got = step(loop, x, grad), step(fused, x, grad)
    scale = want[0].float().norm()  # at k = 1 the router gradient is 0 up to rounding (the weight renormalises to 1)
    for a, b in zip(want, got, strict=True):
        assert (b.float() - a.float()).norm() <= KERNEL_TOL * max(a.float().norm(), scale)
    assert float(fused.dropped_fraction) == float(loop.dropped_fraction)
    assert capacity_factor is None or float(fused.dropped_fraction) > 0


def test_fused_moe_compiles_fullgraph(small_blocks, force_triton):
    """Dynamo traces the autograd Function through the custom ops' fake implementations: one graph, the same
    values (bf16: ``grouped_mm``'s meta function takes no fp32). ``aot_eager`` keeps the test short; Inductor on
    the CUDA bench compiles the same graph."""
    _, fused = make_pair(None, dtype=torch.bfloat16)
    x = torch.randn(N, D, generator=torch.Generator().manual_seed(3)).to(DEVICE, torch.bfloat16)
    grad = torch.randn(N, D, generator=torch.Generator().manual_seed(4)).to(DEVICE, torch.bfloat16)
    eager = step(fused, x, grad)
    fused.zero_grad(set_to_none=True)
    torch._dynamo.reset()
    compiled = torch.compile(fused, fullgraph=True, backend="aot_eager")
    for a, b in zip(step(compiled, x, grad), eager, strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-2, rtol=1e-2)


def test_sorted_forward_fused_equals_grouped_mm(small_blocks, force_triton):
    """The expert-parallel entry point: rows already sorted by expert, ``"fused"`` = grouped_mm + fused SwiGLU."""
    _, fused = make_pair(None)
    counts = torch.tensor([7, 0, 12, 3, 9], device=DEVICE)
    xs = torch.randn(int(counts.sum()), D, device=DEVICE, dtype=KERNEL_DTYPE, requires_grad=True)
    outs = []
    for impl in ("grouped_mm", "fused", "loop"):
        y = fused.experts.sorted_forward(xs, counts, impl, KERNEL_DTYPE)
        outs.append((y, *torch.autograd.grad(y.float().square().sum(), [xs, fused.experts.gate_up_proj])))
    for ref in (outs[0], outs[2]):
        for a, b in zip(outs[1], ref, strict=True):
            assert rel(a, b) < KERNEL_TOL


# --------------------------------------------------------------------------------------------- GPU only
@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU: the Triton path in bf16 at a real shape")
@pytest.mark.parametrize("capacity_factor", [None, 1.0])
def test_fused_matches_loop_bf16_cuda(capacity_factor):
    torch.manual_seed(0)
    kw = dict(num_experts=8, top_k=2, capacity_factor=capacity_factor, device="cuda", dtype=torch.bfloat16)
    loop, fused = MoE(256, 512, impl="loop", **kw), MoE(256, 512, impl="auto", **kw)
    fused.load_state_dict(loop.state_dict())
    x = torch.randn(4096, 256, device="cuda", dtype=torch.bfloat16)
    assert fused.plan(x) == ("fused", torch.bfloat16)
    grad = torch.randn_like(x)
    results = [step(loop, x, grad), step(fused, x, grad)]
    for a, b in zip(*results, strict=True):
        assert rel(b, a) < 2e-2
    fused.zero_grad(set_to_none=True)
    again = step(fused, x, grad)
    for a, b in zip(results[1], again, strict=True):
        assert torch.equal(a, b)  # deterministic: gathers only, no atomics


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize(("k", "case"), [(2, "plain"), (3, "ties")])
def test_triton_bf16_against_fp64_reference_cuda(k, case):
    """Real shapes, an empty expert (its weight gradients must be exactly zero: grouped_mm's empty groups)."""
    check_against_reference(k, case, "triton", dtype=torch.bfloat16, tol=2e-2, n=4096, experts=8, d=256, h=512)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("capacity_factor", [None, 1.0])
def test_fused_moe_layer_makes_no_host_sync_cuda(capacity_factor):
    """The whole layer's training step (router, losses, capacity, experts; forward and backward) under
    ``set_sync_debug_mode("error")``, after a warm-up step."""
    torch.manual_seed(0)
    module = MoE(256, 512, num_experts=8, top_k=2, capacity_factor=capacity_factor, device="cuda", dtype=torch.bfloat16)
    assert module.plan(torch.zeros(1, 256, device="cuda", dtype=torch.bfloat16))[0] == "fused"
    x = torch.randn(4096, 256, device="cuda", dtype=torch.bfloat16)
    grad = torch.randn_like(x)
    step(module, x, grad)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step(module, x, grad)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_fused_makes_no_host_sync_cuda():
    torch.manual_seed(0)
    module = MoE(256, 512, num_experts=8, top_k=2, impl="fused", device="cuda", dtype=torch.bfloat16)
    x = torch.randn(4096, 256, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    module(x).sum().backward()  # compile the kernels first (their first launch may synchronise)
    torch.cuda.synchronize()
    from kernels.moe.triton import routing

    index = torch.randint(0, 8, (4096, 2), device="cuda")
    weights = torch.rand(4096, 2, device="cuda", requires_grad=True)
    experts = module.experts
    torch.cuda.set_sync_debug_mode("error")
    try:
        routing(index, 8)
        y = moe_experts(x, index, weights, experts.gate_up_proj, experts.down_proj)
        y.backward(torch.ones_like(y))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    assert weights.grad is not None and x.grad is not None
