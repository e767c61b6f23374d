"""Property-based tests of the lightning-attention API: random shapes, decays, initial states and packings, every
backend against the fp64 token recurrence, forward and backward.

Hypothesis draws B, T (0 included), H, D and DV (mostly not powers of two), per-head decay rates from 1e-5 to 30,
with or without an initial state, and ``cu_seqlens`` with empty and length-1 sequences. The examples are derived
from a fixed seed (``derandomize``), so every machine runs the same bounded set; the Triton kernels run under the
CPU interpreter here (a few tenths of a second an example) and natively on a GPU.
"""

from __future__ import annotations

import itertools
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernels.lightning_attention import lightning_attention, lightning_attention_decode
from kernels.lightning_attention.reference import lightning_attention_recurrent

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
#: ``ZOO_PROPERTY_SCALE=0.3`` runs a fixed fraction of each test's examples: on a GPU every new head dim compiles
#: kernels (seconds each), where the CPU interpreter needs none.
SCALE = float(os.environ.get("ZOO_PROPERTY_SCALE", "1"))


def examples(n: int) -> int:
    return max(3, round(n * SCALE))


PROPERTY = settings(
    derandomize=True, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    if b.numel() == 0:
        return 0.0
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


@st.composite
def problems(draw, max_t: int = 48, max_dim: int = 40, packed: bool | None = None):
    """One random problem: fp64 tensors, decay rates and (maybe) ``cu_seqlens``."""
    is_packed = draw(st.booleans()) if packed is None else packed
    h = draw(st.integers(1, 3))
    d = draw(st.integers(1, max_dim))
    dv = draw(st.sampled_from([d, *range(1, max_dim + 1)]))  # DV = D half the time or so
    if is_packed:
        lengths = draw(st.lists(st.sampled_from([0, 1, 2, 5, 16, 17, 31]), min_size=1, max_size=4))
        b, t = 1, sum(lengths)
        offsets = [0]
        for n in lengths:
            offsets.append(offsets[-1] + n)
        cu = torch.tensor(offsets, dtype=torch.int32)
        n_seq = len(lengths)
    else:
        b, t, cu = draw(st.integers(1, 3)), draw(st.integers(0, max_t)), None
        n_seq = b
    log_rates = draw(st.lists(st.floats(-5.0, 1.4771), min_size=h, max_size=h))  # 1e-5 … 30
    decay = torch.tensor([10.0**x for x in log_rates], dtype=torch.float64)
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(b, t, h, d, generator=g, dtype=torch.float64) * 0.5 for _ in range(2))
    v = torch.randn(b, t, h, dv, generator=g, dtype=torch.float64) * 0.5
    s0 = torch.randn(n_seq, h, d, dv, generator=g, dtype=torch.float64) * 0.5 if draw(st.booleans()) else None
    return q, k, v, decay, s0, cu


def oracle(q, k, v, decay, s0, cu):
    """The fp64 token recurrence, one sequence at a time: ``(o, final_state)``."""
    if cu is None:
        return lightning_attention_recurrent(q, k, v, decay, s0)
    outs, finals = [], []
    edges = cu.tolist()
    for n, (a, e) in enumerate(itertools.pairwise(edges)):
        o, f = lightning_attention_recurrent(
            q[:, a:e], k[:, a:e], v[:, a:e], decay, s0[n : n + 1] if s0 is not None else None
        )
        outs.append(o)
        finals.append(f)
    return torch.cat(outs, dim=1), torch.cat(finals, dim=0)


def with_grads(fn, q, k, v, s0, weights):
    """Run ``fn(q, k, v, s0) -> (o, final)`` on fresh leaves; return outputs and the gradients of a fixed linear
    functional of both."""
    leaves = [x.detach().clone().requires_grad_() for x in (q, k, v)]
    s0_leaf = s0.detach().clone().requires_grad_() if s0 is not None else None
    o, final = fn(*leaves, s0_leaf)
    go, gf = weights
    loss = (o.double() * go.to(o.device)).sum() + (final.double() * gf.to(final.device)).sum()
    if loss.requires_grad:  # not when T = 0 and there is no initial state: nothing to differentiate
        loss.backward()
    grads = [x.grad if x.grad is not None else torch.zeros_like(x) for x in leaves]
    if s0_leaf is not None:
        grads.append(s0_leaf.grad)
    return o, final, grads


def check_backend(problem, backend: str, dtype: torch.dtype, tol: float) -> None:
    q, k, v, decay, s0, cu = problem
    g = torch.Generator().manual_seed(1)
    o_shape = (*v.shape[:3], v.shape[-1])
    n_seq = q.shape[0] if cu is None else cu.numel() - 1
    weights = (
        torch.randn(o_shape, generator=g, dtype=torch.float64),
        torch.randn(n_seq, q.shape[2], q.shape[3], v.shape[3], generator=g, dtype=torch.float64),
    )
    want_o, want_f, want_g = with_grads(lambda a, b, c, s: oracle(a, b, c, decay, s, cu), q, k, v, s0, weights)

    def run(a, b, c, s):
        cast = [x.to(DEVICE, dtype) for x in (a, b, c)]
        state = s.to(DEVICE, torch.float64 if dtype == torch.float64 else torch.float32) if s is not None else None
        return lightning_attention(
            *cast,
            decay.to(DEVICE, torch.float32 if dtype != torch.float64 else dtype),
            initial_state=state,
            output_final_state=True,
            cu_seqlens=cu.to(DEVICE) if cu is not None else None,
            backend=backend,
        )

    got_o, got_f, got_g = with_grads(run, q, k, v, s0, weights)
    assert got_o.shape == want_o.shape and got_o.dtype == dtype
    assert got_f.shape == want_f.shape
    assert rel(got_o, want_o) < tol, "o"
    assert rel(got_f, want_f) < tol, "final_state"
    for name, got, want in zip(("dq", "dk", "dv", "d initial_state"), got_g, want_g):
        assert rel(got, want) < tol, name


@settings(PROPERTY, max_examples=examples(60))
@given(problems(max_t=80))
def test_torch_backend_matches_the_recurrence_in_fp64(problem):
    check_backend(problem, "torch", torch.float64, 1e-10)


@settings(PROPERTY, max_examples=examples(30))
@given(problems())
def test_triton_backend_matches_the_recurrence(problem):
    check_backend(problem, "triton", torch.float32, 2e-4)


@settings(PROPERTY, max_examples=examples(15))
@given(problems(packed=True))
def test_triton_packed_with_empty_and_single_token_sequences(problem):
    check_backend(problem, "triton", torch.float32, 2e-4)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_every_backend_gives_the_initial_state_for_empty_sequences(backend):
    """``T = 0`` and an empty sequence inside a packed batch: no output rows, the final state is the initial one."""
    h, d, dv = 2, 16, 24
    decay = torch.tensor([0.3, 0.01], device=DEVICE)
    s0 = torch.randn(3, h, d, dv, device=DEVICE)
    q = torch.randn(1, 25, h, d, device=DEVICE)
    v = torch.randn(1, 25, h, dv, device=DEVICE)
    cu = torch.tensor([0, 10, 10, 25], dtype=torch.int32, device=DEVICE)
    o, final = lightning_attention(
        q, q, v, decay, initial_state=s0, output_final_state=True, cu_seqlens=cu, backend=backend
    )
    assert o.shape == (1, 25, h, dv)
    assert torch.equal(final[1], s0[1])
    empty_qk, empty_v = torch.zeros(3, 0, h, d, device=DEVICE), torch.zeros(3, 0, h, dv, device=DEVICE)
    o, final = lightning_attention(
        empty_qk, empty_qk, empty_v, decay, initial_state=s0, output_final_state=True, backend=backend
    )
    assert o.shape == (3, 0, h, dv) and torch.equal(final, s0)
    o, final = lightning_attention(empty_qk, empty_qk, empty_v, decay, output_final_state=True, backend=backend)
    assert torch.equal(final, torch.zeros(3, h, d, dv, device=DEVICE))


@settings(PROPERTY, max_examples=examples(25))
@given(
    problems(max_t=24, packed=False),
    st.integers(1, 6),
    st.sampled_from(["torch", "triton"]),
    st.booleans(),
)
def test_decode_after_prefill_equals_one_forward(problem, steps, backend, inplace):
    """Prefill T tokens, then decode ``steps`` more one at a time: the same outputs and state as one forward."""
    q, k, v, decay, s0, _ = problem
    b, t, h, _d = q.shape
    g = torch.Generator().manual_seed(t)
    more = [torch.randn(b, steps, h, x.shape[-1], generator=g, dtype=torch.float64) * 0.5 for x in (q, k, v)]
    q, k, v = (torch.cat([x, y], 1) for x, y in zip((q, k, v), more))
    want_o, want_f = lightning_attention_recurrent(q, k, v, decay, s0)
    q32, k32, v32 = (x.to(DEVICE, torch.float32) for x in (q, k, v))
    rates = decay.to(DEVICE, torch.float32)
    state0 = s0.to(DEVICE, torch.float32) if s0 is not None else None
    o, state = lightning_attention(
        q32[:, :t], k32[:, :t], v32[:, :t], rates, initial_state=state0, output_final_state=True, backend=backend
    )
    outs = [o]
    for i in range(t, t + steps):
        step, new_state = lightning_attention_decode(
            q32[:, i : i + 1], k32[:, i : i + 1], v32[:, i : i + 1], rates, state, inplace=inplace, backend=backend
        )
        assert step.shape == (b, 1, h, v.shape[-1])
        assert (new_state is state) == inplace
        state = new_state
        outs.append(step)
    assert rel(torch.cat(outs, 1), want_o) < 2e-4
    assert rel(state, want_f) < 2e-4


@settings(PROPERTY, max_examples=examples(40))
@given(
    st.integers(1, 3),
    st.integers(1, 4),
    st.integers(1, 70),
    st.integers(1, 70),
    st.floats(-5.0, 1.4771),
    st.sampled_from(["torch", "triton"]),
)
def test_decode_step_matches_the_recurrence(b, h, d, dv, log_rate, backend):
    """One step on a random state, any D and DV up to 70 (the Triton step tiles DV by 32: every column written)."""
    g = torch.Generator().manual_seed(d * 100 + dv)
    q, k = (torch.randn(b, h, d, generator=g, dtype=torch.float64) for _ in range(2))
    v = torch.randn(b, h, dv, generator=g, dtype=torch.float64)
    state = torch.randn(b, h, d, dv, generator=g, dtype=torch.float64)
    decay = torch.full((h,), 10.0**log_rate, dtype=torch.float64)
    want_state = torch.exp(-decay).view(1, h, 1, 1) * state + k.unsqueeze(-1) * v.unsqueeze(-2)
    want_o = (q.unsqueeze(-2) @ want_state).squeeze(-2)
    o, new_state = lightning_attention_decode(
        *(x.to(DEVICE, torch.float32) for x in (q, k, v)),
        decay.to(DEVICE, torch.float32),
        state.to(DEVICE, torch.float32),
        backend=backend,
    )
    assert o.shape == (b, h, dv) and new_state.shape == (b, h, d, dv)
    assert torch.isfinite(o).all()
    assert rel(new_state, want_state) < 1e-6
    assert rel(o, want_o) < 1e-5
