"""Attention components: MiniMax's lightning token mixer, softmax attention with GQA/RoPE, the hybrid layout."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from zoo.attention import (
    AttentionSpec,
    KVCache,
    LightningAttention,
    LightningCache,
    alibi_slopes,
    attention_specs,
    decay_rates,
    hybrid_layout,
)
from zoo.registries import ATTENTION

DIM, HEADS = 64, 4


def build(name: str, layer_idx: int = 1, num_layers: int = 8, **kwargs):
    torch.manual_seed(0)
    return ATTENTION.build(name, DIM, HEADS, layer_idx=layer_idx, num_layers=num_layers, **kwargs).double()


@pytest.mark.parametrize("name", ["lightning", "softmax"])
def test_contract_shapes_backward_and_meta(name):
    module = build(name)
    x = torch.randn(2, 9, DIM, dtype=torch.float64, requires_grad=True)
    y = module(x)
    assert y.shape == x.shape
    y.square().sum().backward()
    assert torch.isfinite(x.grad).all() and all(p.grad is not None for p in module.parameters())
    meta = ATTENTION.build(name, DIM, HEADS, layer_idx=0, num_layers=2, device="meta")
    assert all(p.device.type == "meta" for p in meta.parameters())


def test_alibi_slopes_and_minimax_decay():
    assert torch.allclose(alibi_slopes(64), torch.tensor([2 ** (-(h + 1) / 8) for h in range(64)]))
    assert torch.allclose(alibi_slopes(16), torch.tensor([2 ** (-8 * (h + 1) / 16) for h in range(16)]))
    # H = 12 (not a power of two): the 8 slopes of H = 8, then every other slope of H = 16
    want = [2 ** (-(h + 1)) for h in range(8)] + [2 ** (-8 * (h + 1) / 16) for h in range(16)][0::2][:4]
    assert torch.allclose(alibi_slopes(12), torch.tensor(want))
    rates = decay_rates(64, 78, 80)
    assert math.isclose(math.exp(-float(rates[0])), 0.9885, abs_tol=5e-4)  # minimax.md §1.3 table
    assert math.isclose(math.exp(-float(decay_rates(64, 0, 80)[0])), 0.400, abs_tol=5e-4)
    assert math.isclose(math.exp(-float(decay_rates(64, 0, 80)[63])), 0.9961, abs_tol=5e-5)
    with pytest.raises(ValueError, match="layer_idx"):
        decay_rates(4, 8, 8)


def minimax_m1_lightning(module: LightningAttention, x: torch.Tensor) -> torch.Tensor:
    """MiniMax-M1's reference forward (minimax.md §1.1/§1.6), written independently: interleaved per-head qkv,
    SiLU, the token recurrence, RMSNorm over all heads, sigmoid gate from the block input, output projection."""
    b, n, _ = x.shape
    h, d = module.num_heads, module.head_dim
    qkv = F.silu(x @ module.qkv_proj.weight.T).view(b, n, h, 3 * d)
    q, k, v = qkv[..., :d], qkv[..., d : 2 * d], qkv[..., 2 * d :]
    lam = torch.exp(-module.decay).view(1, h, 1, 1)
    kv = torch.zeros(b, h, d, d, dtype=x.dtype)
    out = []
    for t in range(n):
        kv = lam * kv + k[:, t].unsqueeze(-1) * v[:, t].unsqueeze(-2)
        out.append((q[:, t].unsqueeze(-2) @ kv).squeeze(-2))
    o = torch.stack(out, 1).reshape(b, n, h * d)
    o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + module.norm.eps) * module.norm.weight
    o = torch.sigmoid(x @ module.output_gate.weight.T) * o
    return o @ module.out_proj.weight.T


@pytest.mark.parametrize("layer_idx", [0, 5, 7])
def test_lightning_matches_minimax_reference(layer_idx):
    module = build("lightning", layer_idx=layer_idx, backend="torch")
    for p in module.parameters():
        torch.nn.init.normal_(p, std=0.2)
    x = torch.randn(2, 300, DIM, dtype=torch.float64)
    torch.testing.assert_close(module(x), minimax_m1_lightning(module, x), rtol=1e-9, atol=1e-9)


def test_lightning_state_dict_uses_hugging_face_names():
    keys = set(build("lightning").state_dict())
    assert keys == {"qkv_proj.weight", "output_gate.weight", "norm.weight", "out_proj.weight"}
    assert build("lightning").qkv_proj.weight.shape == (3 * DIM, DIM)


@pytest.mark.parametrize("name", ["lightning", "softmax"])
def test_prefill_then_steps_equal_one_forward(name):
    module = build(name)
    x = torch.randn(2, 12, DIM, dtype=torch.float64)
    full = module(x)
    cache = module.new_cache()
    parts = [module(x[:, :7], cache=cache)]
    for t in range(7, 12):
        parts.append(module.step(x[:, t : t + 1], cache))
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=1e-9, atol=1e-9)
    assert isinstance(cache, LightningCache if name == "lightning" else KVCache)


@pytest.mark.parametrize("name", ["lightning", "softmax"])
def test_packed_sequences_do_not_attend_across_documents(name):
    module = build(name)
    lengths = [5, 11, 3]
    docs = [torch.randn(1, n, DIM, dtype=torch.float64) for n in lengths]
    cu = torch.tensor([0, 5, 16, 19], dtype=torch.int32)
    packed = module(torch.cat(docs, 1), cu_seqlens=cu)
    alone = torch.cat([module(doc) for doc in docs], 1)
    torch.testing.assert_close(packed, alone, rtol=1e-9, atol=1e-9)


def test_softmax_gqa_equals_repeated_kv_heads():
    gqa = build("softmax", num_kv_heads=2)
    mha = build("softmax", num_kv_heads=4)
    with torch.no_grad():
        mha.q_proj.weight.copy_(gqa.q_proj.weight)
        mha.o_proj.weight.copy_(gqa.o_proj.weight)
        for name in ("k_proj", "v_proj"):  # each KV head serves two query heads
            w = getattr(gqa, name).weight.view(2, -1, DIM)
            getattr(mha, name).weight.copy_(w.repeat_interleave(2, dim=0).reshape(-1, DIM))
    x = torch.randn(2, 10, DIM, dtype=torch.float64)
    torch.testing.assert_close(gqa(x), mha(x))
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        build("softmax", num_kv_heads=3)


def test_rope_rotates_only_its_fraction_and_is_relative():
    module = build("softmax", rope_fraction=0.5, rope_theta=1e7)
    assert module.rotary.rotary_dim == module.head_dim // 2
    cos, sin = module.rotary(torch.arange(6))
    x = torch.randn(1, 6, 2, module.head_dim, dtype=torch.float64)
    from zoo.layers import apply_rotary

    rotated = apply_rotary(x, cos, sin)
    torch.testing.assert_close(rotated[..., module.head_dim // 2 :], x[..., module.head_dim // 2 :])
    # q·k after RoPE depends only on the distance between positions
    q = torch.randn(1, 1, 1, module.head_dim, dtype=torch.float64).expand(1, 6, 1, -1)
    k = torch.randn(1, 1, 1, module.head_dim, dtype=torch.float64).expand(1, 6, 1, -1)
    rq, rk = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    torch.testing.assert_close((rq[0, 3] * rk[0, 1]).sum(), (rq[0, 4] * rk[0, 2]).sum())


def test_hybrid_layout_letters_names_and_specs():
    layout = hybrid_layout("LLLLLLLS", 80)
    assert [i for i, n in enumerate(layout) if n == "softmax"] == list(range(7, 80, 8))
    assert layout.count("lightning") == 70
    assert hybrid_layout(["L", "softmax", "lightning"], 3) == ["lightning", "softmax", "lightning"]
    assert hybrid_layout("LS", 3) == ["lightning", "softmax", "lightning"]
    specs = attention_specs(["L", {"name": "S", "num_kv_heads": 1, "alpha": 1.5}, {"name": "softmax"}], 3)
    assert specs[1] == AttentionSpec("softmax", {"num_kv_heads": 1}, alpha=1.5)
    assert specs[2] == AttentionSpec("softmax") and specs[0] == AttentionSpec("lightning")
    assert "hybrid" not in ATTENTION  # one hybrid mechanism: the layout


@pytest.mark.parametrize(
    ("pattern", "layers", "message"),
    [
        ("LLX", 8, r"unknown letters \['X'\]; valid: L \(lightning\), S \(softmax\)"),
        ("LLLLLLLLS", 8, "has 9 layers but the stack has only 8"),
        ("", 8, "pattern is empty"),
        (["L", "S"], 3, "one entry per layer: got 2 for 3"),
        (["L", "mamba", "S"], 3, "layer 1: unknown attention 'mamba'; valid: L, S or one of lightning, softmax"),
        (["L", {"kind": "S"}, "S"], 3, "layer 1: an attention mapping needs a 'name'"),
    ],
)
def test_hybrid_layout_errors(pattern, layers, message):
    with pytest.raises(ValueError, match=message):
        hybrid_layout(pattern, layers)
