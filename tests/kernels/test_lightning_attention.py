"""Lightning attention: the three PyTorch forms agree in fp64; the Triton kernels (forward, backward, decode,
packed sequences, segment pre-pass) match them — under the CPU interpreter here, natively on a GPU."""

from __future__ import annotations

import pytest
import torch

import kernels.backend as kernel_backend
from kernels.lightning_attention import (
    lightning_attention,
    lightning_attention_blockwise,
    lightning_attention_decode,
    lightning_attention_quadratic,
    lightning_attention_recurrent,
    resolve_backend,
)

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"


def rates(h: int, strength: str) -> torch.Tensor:
    """MiniMax's ALiBi slopes at layer 0 (strong decay) or at 98 % depth (weak decay, long memory)."""
    base = torch.tensor([2 ** (-8 * (i + 1) / h) for i in range(h)], dtype=torch.float64)
    return base * (1 + 1e-5) if strength == "strong" else base * 0.02


def inputs(b, t, h, d, dtype=torch.float64, device="cpu", scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(b, t, h, d, generator=g, dtype=torch.float64) * scale).to(device, dtype) for _ in range(3)]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


# --------------------------------------------------------------------------------------------- references
@pytest.mark.parametrize("t", [1, 7, 63, 255, 256, 257, 1000])
@pytest.mark.parametrize(("h", "d"), [(1, 16), (3, 32), (4, 64)])
@pytest.mark.parametrize("strength", ["strong", "weak"])
def test_reference_forms_agree_in_fp64(t, h, d, strength):
    q, k, v = inputs(1, t, h, d, scale=0.5)
    s0 = torch.randn(1, h, d, d, dtype=torch.float64)
    decay = rates(h, strength)
    o_quad, f_quad = lightning_attention_quadratic(q, k, v, decay, s0)
    o_blk, f_blk = lightning_attention_blockwise(q, k, v, decay, s0)
    assert rel(o_blk, o_quad) < 1e-12 and rel(f_blk, f_quad) < 1e-12
    if t <= 257:
        o_rec, f_rec = lightning_attention_recurrent(q, k, v, decay, s0)
        assert rel(o_rec, o_quad) < 1e-12 and rel(f_rec, f_quad) < 1e-12


@pytest.mark.parametrize("t", [63, 257, 700])
@pytest.mark.parametrize("initial", [False, True])
def test_blockwise_gradients_match_the_quadratic_form(t, initial):
    h, d = 3, 16
    decay = rates(h, "strong")
    base = [*inputs(2, t, h, d, scale=0.5), torch.randn(2, h, d, d, dtype=torch.float64) if initial else None]

    def grads(fn):
        leaves = [x.clone().requires_grad_() if x is not None else None for x in base]
        o, final = fn(*leaves[:3], decay, leaves[3])
        torch.manual_seed(1)
        (o * torch.randn_like(o)).sum().add((final * torch.randn_like(final)).sum()).backward()
        return [x.grad for x in leaves if x is not None]

    for got, want in zip(
        grads(lambda *a: lightning_attention_blockwise(*a, block=64)), grads(lightning_attention_quadratic)
    ):
        assert rel(got, want) < 1e-12


def test_blockwise_packed_sequences_restart_the_state():
    h, d = 2, 16
    lengths = [5, 300, 1, 64]
    q, k, v = inputs(1, sum(lengths), h, d)
    s0 = torch.randn(len(lengths), h, d, d, dtype=torch.float64)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    decay = rates(h, "strong")
    o, final = lightning_attention_blockwise(q, k, v, decay, s0, cu_seqlens=cu)
    for n, (a, e) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
        o_n, f_n = lightning_attention_quadratic(q[:, a:e], k[:, a:e], v[:, a:e], decay, s0[n : n + 1])
        assert rel(o[:, a:e], o_n) < 1e-12 and rel(final[n : n + 1], f_n) < 1e-12


def test_dispatch_and_errors():
    q = torch.randn(1, 4, 2, 16)
    assert resolve_backend("auto", q) in ("torch", "triton") and resolve_backend("torch", q) == "torch"
    assert resolve_backend("auto", q) == ("triton" if q.is_cuda else "torch")
    with pytest.raises(ValueError, match="backend must be one of"):
        lightning_attention(q, q, q, torch.ones(2), backend="cuda")
    with pytest.raises(ValueError, match=r"decay must be \[H\]"):
        lightning_attention(q, q, q, torch.ones(3))
    with pytest.raises(ValueError, match="initial_state must be"):
        lightning_attention(q, q, q, torch.ones(2), initial_state=torch.zeros(1, 2, 16, 8))
    with pytest.raises(ValueError, match="batch of size 1"):
        lightning_attention(
            q.expand(2, -1, -1, -1),
            q.expand(2, -1, -1, -1),
            q.expand(2, -1, -1, -1),
            torch.ones(2),
            cu_seqlens=torch.tensor([0, 4], dtype=torch.int32),
        )


# --------------------------------------------------------------------------------------------- Triton kernels
def triton_call(q, k, v, decay, s0=None, cu=None, segment_len=None):
    from kernels.lightning_attention.triton import lightning_attention_triton

    return lightning_attention_triton(q, k, v, decay.float(), s0, cu, output_final_state=True, segment_len=segment_len)


def check_triton_against_fp64(
    b, t, h, d, strength, initial, cu=None, segment_len=None, dtype=torch.float32, tol=1e-4, dv=None
):
    q, k, v = inputs(b, t, h, d, scale=0.5)
    if dv is not None:
        v = torch.randn(b, t, h, dv, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 0.5
    n = b if cu is None else cu.numel() - 1
    s0 = torch.randn(n, h, d, v.shape[-1], dtype=torch.float64) * 0.5 if initial else None
    decay = rates(h, strength)
    # the fp64 oracle, with gradients
    leaves = [x.clone().requires_grad_() for x in (q, k, v)] + ([s0.clone().requires_grad_()] if initial else [])
    o_ref, f_ref = lightning_attention_blockwise(*leaves[:3], decay, leaves[3] if initial else None, cu_seqlens=cu)
    g = torch.Generator().manual_seed(7)
    go, gf = (
        torch.randn(o_ref.shape, generator=g, dtype=torch.float64),
        torch.randn(f_ref.shape, generator=g, dtype=torch.float64),
    )
    ((o_ref * go).sum() + (f_ref * gf).sum()).backward()
    # the kernel
    tri = [x.detach().to(DEVICE, dtype).requires_grad_() for x in (q, k, v)]
    tri_s0 = s0.to(DEVICE, torch.float32).requires_grad_() if initial else None
    o, final = triton_call(*tri, decay.to(DEVICE), tri_s0, cu.to(DEVICE) if cu is not None else None, segment_len)
    assert o.dtype == dtype and final.dtype == torch.float32
    ((o.float() * go.to(DEVICE).float()).sum() + (final * gf.to(DEVICE).float()).sum()).backward()
    assert rel(o.cpu(), o_ref) < tol, "o"
    assert rel(final.cpu(), f_ref) < tol, "final_state"
    for name, got, want in zip(("dq", "dk", "dv"), tri, leaves):
        assert rel(got.grad.cpu(), want.grad) < tol, name
    if initial:
        assert rel(tri_s0.grad.cpu(), leaves[3].grad) < tol, "d initial_state"


@pytest.mark.parametrize("t", [1, 7, 33, 70])
@pytest.mark.parametrize(("h", "d"), [(1, 16), (3, 32)])
@pytest.mark.parametrize("initial", [False, True])
def test_triton_forward_and_backward(t, h, d, initial):
    check_triton_against_fp64(2, t, h, d, "strong" if t % 2 else "weak", initial)


@pytest.mark.parametrize("segment_len", [16, 32])
@pytest.mark.parametrize("strength", ["strong", "weak"])
def test_triton_segment_prepass(segment_len, strength):
    """Sequences split over several programs: the summary + scan pre-pass in both directions."""
    check_triton_against_fp64(2, 75, 3, 16, strength, initial=True, segment_len=segment_len)


@pytest.mark.parametrize("segment_len", [None, 16])
def test_triton_packed_uneven_sequences(segment_len):
    cu = torch.tensor([0, 1, 20, 21, 66, 70], dtype=torch.int32)
    check_triton_against_fp64(1, 70, 2, 16, "strong", initial=True, cu=cu, segment_len=segment_len)


def test_triton_half_precision_inputs():
    check_triton_against_fp64(1, 40, 2, 16, "weak", initial=True, dtype=torch.float16, tol=5e-3)


@pytest.mark.parametrize(("d", "dv"), [(24, 24), (48, 80), (5, 33)])
def test_triton_takes_head_dims_that_are_not_powers_of_two(d, dv):
    """Padded to a power of two and masked, in the forward, the backward, the pre-pass and the final state."""
    check_triton_against_fp64(1, 37, 2, d, "strong", initial=True, dv=dv, segment_len=16)


def test_head_dims_beyond_the_kernels_fall_back_once_with_a_log(monkeypatch, caplog):
    import kernels.lightning_attention as la
    from kernels.lightning_attention.triton import MAX_HEAD_DIM, unsupported_reason

    assert unsupported_reason(96, 80, torch.bfloat16) is None
    assert "D=160" in unsupported_reason(160, 128, torch.bfloat16)
    assert unsupported_reason(256, 256, torch.float32, "decode") is None
    assert "float64" in unsupported_reason(16, 16, torch.float64)
    d = MAX_HEAD_DIM["chunk"] + 32
    q = torch.randn(1, 5, 2, d, device=DEVICE)
    with pytest.raises(ValueError, match=r"backend='triton' cannot run: head dim D=160 is outside"):
        lightning_attention(q, q, q, torch.ones(2, device=DEVICE), backend="triton")
    # "auto" where Triton would run: the PyTorch backend, and the reason logged once
    monkeypatch.setattr(la, "resolve_backend", lambda backend, tensor: "triton")
    kernel_backend.log_once.cache_clear()
    with caplog.at_level("INFO", logger="kernels"):
        for _ in range(2):
            o = lightning_attention(q, q, q, torch.ones(2, device=DEVICE), backend="auto")
    assert [r.getMessage() for r in caplog.records].count(
        "lightning_attention: using the PyTorch backend because head dim D=160 is outside the Triton chunk "
        "kernel's range 1…128"
    ) == 1
    assert rel(o.cpu(), lightning_attention_blockwise(q.cpu(), q.cpu(), q.cpu(), torch.ones(2))[0]) < 1e-6


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("inplace", [False, True])
def test_decode_steps_after_prefill_equal_one_full_forward(backend, inplace):
    b, t, h, d, steps = 2, 21, 3, 16, 5
    q, k, v = inputs(b, t + steps, h, d, dtype=torch.float32, scale=0.5, device=DEVICE)
    decay = rates(h, "strong").float().to(DEVICE)
    full = lightning_attention(q, k, v, decay, backend="torch")
    o, state = lightning_attention(q[:, :t], k[:, :t], v[:, :t], decay, output_final_state=True, backend=backend)
    outs = [o]
    for i in range(t, t + steps):
        step, new_state = lightning_attention_decode(
            q[:, i : i + 1], k[:, i : i + 1], v[:, i : i + 1], decay, state, inplace=inplace, backend=backend
        )
        assert step.shape == (b, 1, h, d)
        assert (new_state is state) == inplace
        state = new_state
        outs.append(step)
    assert rel(torch.cat(outs, 1).cpu(), full.cpu()) < 1e-5


def test_decode_state_matches_recurrence_in_fp64():
    b, h, d = 3, 2, 16
    q, k, v = (x[:, 0] for x in inputs(b, 1, h, d))
    state = torch.randn(b, h, d, d, dtype=torch.float64)
    decay = rates(h, "weak")
    o, new_state = lightning_attention_decode(q.float(), k.float(), v.float(), decay, state.float())
    want_state = torch.exp(-decay).view(1, h, 1, 1) * state + k.unsqueeze(-1) * v.unsqueeze(-2)
    assert rel(new_state, want_state) < 1e-6
    assert rel(o, (q.unsqueeze(-2) @ want_state).squeeze(-2)) < 1e-6
    with pytest.raises(ValueError, match="must be fp32"):
        lightning_attention_decode(q, k, v, decay, state.half())


# --------------------------------------------------------------------------------------------- GPU only
@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize(("b", "t", "h"), [(2, 1024, 4), (1, 4096, 16), (1, 3000, 8)])
@pytest.mark.parametrize("strength", ["strong", "weak"])
def test_triton_bf16_accuracy_on_gpu(b, t, h, strength):
    check_triton_against_fp64(b, t, h, 128, strength, initial=True, dtype=torch.bfloat16, tol=1e-2)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize(("d", "dv"), [(96, 96), (80, 48), (64, 128), (24, 40)])
def test_triton_bf16_odd_head_dims_on_gpu(d, dv):
    check_triton_against_fp64(2, 1500, 4, d, "weak", initial=True, dtype=torch.bfloat16, tol=1e-2, dv=dv)
    check_triton_against_fp64(
        1, 777, 3, d, "strong", initial=True, dtype=torch.bfloat16, tol=1e-2, dv=dv, segment_len=128
    )


def test_state_after_last_token_continues_the_recurrence():
    """The final state includes the last token: one more recurrent step from it equals a longer prefill."""
    q, k, v = inputs(1, 300, 2, 16)
    decay = rates(2, "strong")
    _, state = lightning_attention_blockwise(q[:, :299], k[:, :299], v[:, :299], decay)
    step = torch.exp(-decay).view(1, 2, 1, 1) * state + k[:, 299].unsqueeze(-1) * v[:, 299].unsqueeze(-2)
    _, final = lightning_attention_quadratic(q, k, v, decay)
    assert rel(step, final) < 1e-12


def _segment_rows(bounds, seg_len):
    """The segment table the kernels expect, one Python row at a time."""
    table, seqs = [], []
    for n, (start, end) in enumerate(bounds):
        cuts = list(range(start, end, seg_len)) or [start]
        seqs.append((len(table), len(cuts)))
        for i, a in enumerate(cuts):
            table.append((n, a, min(a + seg_len, end), (i == 0) | ((i == len(cuts) - 1) << 1)))
    return table, seqs


@pytest.mark.parametrize(("n", "length", "seg_len"), [(3, 37, 16), (1, 16, 16), (2, 1, 16), (4, 5, 32), (2, 64, 16)])
def test_equal_length_segments_are_built_on_the_device_with_the_same_rows(n, length, seg_len):
    """A ``[B, T]`` batch's segment tables are made by tensor arithmetic (capturable in a CUDA graph): the same
    rows as the general per-sequence loop, which ragged bounds still take."""
    from kernels.lightning_attention.triton import Segments

    bounds = [(i * length, (i + 1) * length) for i in range(n)]
    table, seqs = _segment_rows(bounds, seg_len)
    segments = Segments(bounds, heads=2, device=torch.device("cpu"), block=16, seg_len=seg_len)
    assert segments.table.dtype == torch.int32 and segments.table.tolist() == [list(r) for r in table]
    assert segments.seqs.tolist() == [list(r) for r in seqs]
    assert segments.num_segments == len(table) and segments.split == (len(table) > n)
    ragged = [(0, 3), (3, 40), (40, 41)]
    table, seqs = _segment_rows(ragged, seg_len)
    segments = Segments(ragged, heads=2, device=torch.device("cpu"), block=16, seg_len=seg_len)
    assert segments.table.tolist() == [list(r) for r in table] and segments.seqs.tolist() == [list(r) for r in seqs]
