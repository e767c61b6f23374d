"""The hybrid MoE language model: configuration, packed documents, cached generation, parameter counts."""

from __future__ import annotations

import pytest
import torch

from zoo.models import HybridLM, HybridLMConfig, sample_token
from zoo.registries import MODEL

TINY = dict(
    vocab_size=61, hidden_size=32, num_layers=4, attention="LLLS", num_heads=4, num_kv_heads=2, head_dim=8,
    intermediate_size=24, num_experts=4, top_k=2, attention_backend="torch",
)  # fmt: skip


def tiny(**overrides) -> HybridLM:
    torch.manual_seed(0)
    return HybridLM({**TINY, **overrides}).double().eval()


def test_registry_builds_the_model_from_a_dict():
    model = MODEL.build("hybrid_lm", dict(TINY))
    assert isinstance(model, HybridLM)
    assert [layer.attention_type for layer in model.model.layers] == ["lightning"] * 3 + ["softmax"]
    assert [layer.ffn_type for layer in model.model.layers] == ["moe"] * 4


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"norm": "sandwich"}, "norm='sandwich' is unknown; valid: post, pre"),
        ({"ffn": "MX"}, "pattern of M (moe) / D (dense)"),
        ({"attention": "LLQ"}, "unknown letters ['Q']"),
        ({"top_k": 5}, "top_k=5 exceeds num_experts=4"),
        ({"flash": True}, "unknown model.config keys ['flash']"),
    ],
)
def test_bad_config_names_the_key(overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        HybridLMConfig.from_dict({**TINY, **overrides})


def test_ffn_pattern_and_residual_factors():
    c = HybridLMConfig(**{**TINY, "ffn": "DM"})
    assert c.ffn_layout == ["dense", "moe", "dense", "moe"]
    assert c.residual_factors("lightning") == (pytest.approx((2 * 4) ** 0.25), 1.0)
    assert HybridLMConfig(**{**TINY, "norm": "pre"}).residual_factors("ffn") == (1.0, 1.0)
    assert HybridLMConfig(num_layers=80, attention="LLLLLLLS").residual_factors("softmax")[0] == pytest.approx(
        3.5565588200778455
    )


@pytest.mark.parametrize("norm", ["post", "pre"])
def test_packed_documents_do_not_see_each_other(norm):
    """One packed row of three documents gives each document the logits it has alone (both attention types)."""
    model = tiny(norm=norm)
    lengths = [5, 9, 4]
    docs = [torch.randint(0, 61, (1, n)) for n in lengths]
    packed = torch.cat(docs, dim=1)
    cu = torch.tensor([0, 5, 14, 18], dtype=torch.int32)
    with torch.no_grad():
        together = model(packed, cu_seqlens=cu)
        alone = torch.cat([model(d) for d in docs], dim=1)
        unpacked = model(packed)
    torch.testing.assert_close(together, alone, rtol=1e-10, atol=1e-10)
    assert not torch.allclose(unpacked[:, 5:], alone[:, 5:])  # without cu_seqlens the documents do mix


def test_packed_batch_rows_are_flattened_with_their_boundaries():
    model = tiny()
    ids = torch.randint(0, 61, (2, 6))
    cu = torch.tensor([0, 6, 12], dtype=torch.int32)
    with torch.no_grad():
        torch.testing.assert_close(model(ids, cu_seqlens=cu), model(ids), rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="B·T = 12"):
        model(ids, cu_seqlens=torch.tensor([0, 6, 10], dtype=torch.int32))


@pytest.mark.parametrize("ffn", ["moe", "dense"])
def test_cached_decoding_matches_a_full_forward(ffn):
    model = tiny(ffn=ffn)
    ids = torch.randint(0, 61, (3, 13))
    with torch.no_grad():
        full = model(ids)
        cache = model.new_cache()
        pieces = [model(ids[:, :7], cache=cache)]  # prefill
        pieces += [model(ids[:, t : t + 1], cache=cache) for t in range(7, 10)]  # decode steps
        pieces.append(model(ids[:, 10:], cache=cache))  # a second chunked prefill
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-9, atol=1e-9)
    assert cache.length == 13


def test_generate_greedy_equals_argmax_of_full_forward():
    model = tiny()
    prompt = torch.randint(0, 61, (2, 5))
    out = model.generate(prompt, 6, temperature=0.0)
    ids = torch.cat([prompt, torch.tensor(out.tokens)], dim=1)
    with torch.no_grad():
        logits = model(ids)
    expected = logits[:, 4:-1].argmax(-1)
    assert ids[:, 5:].tolist() == expected.tolist()
    torch.testing.assert_close(
        torch.tensor(out.logprobs, dtype=torch.float64),
        torch.log_softmax(logits[:, 4:-1], -1).gather(-1, expected[..., None])[..., 0],
    )


def test_generate_stops_at_eos_and_keeps_it():
    model = tiny()
    prompt = torch.randint(0, 61, (1, 3))
    with torch.no_grad():
        first = model(prompt)[:, -1].argmax(-1).item()
    out = model.generate(prompt, 10, temperature=0.0, eos=first)
    assert out.tokens == [[first]]


def test_nucleus_sampling_keeps_the_smallest_top_set():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    gen = torch.Generator().manual_seed(0)
    draws = {sample_token(logits, 1.0, 0.7, gen).item() for _ in range(200)}
    assert draws == {0, 1}
    assert sample_token(logits, 0.0).item() == 0
    with pytest.raises(ValueError, match="top_p"):
        sample_token(logits, 1.0, 0.0)


def test_moe_loss_reaches_the_gradient_and_stats_are_reported():
    model = HybridLM({**TINY, "moe_kwargs": {"aux_loss_coef": 0.1}})
    ids = torch.randint(0, 61, (2, 8))
    model(ids)
    aux = model.moe_loss()
    assert aux is not None and aux.ndim == 0 and aux.item() > 0
    aux.backward()
    assert model.model.layers[0].mlp.gate.weight.grad.abs().sum() > 0
    stats = model.moe_stats()
    assert stats["expert_load"].shape == (4, 4)
    torch.testing.assert_close(stats["expert_load"].sum(-1), torch.ones(4))
    assert HybridLM({**TINY, "ffn": "dense"}).moe_loss() is None


def test_lm_head_fp32_under_autocast():
    model = HybridLM({**TINY, "lm_head_fp32": True})
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(torch.randint(0, 61, (1, 4)))
    assert logits.dtype == torch.float32


def test_minimax_text_01_parameter_count_on_meta():
    """minimax.md §2.1: 456.09B parameters in all, 45.95B active per token without embedding and LM head (exactly
    45,944,920,064 = 45.945B: the spec rounds that half up)."""
    config = HybridLMConfig(
        vocab_size=200064, hidden_size=6144, num_layers=80, attention="LLLLLLLS", num_heads=64, num_kv_heads=8,
        head_dim=128, intermediate_size=9216, num_experts=32, top_k=2,
    )  # fmt: skip
    with torch.device("meta"):
        counts = HybridLM(config).count_params()
    assert round(counts["total"] / 1e9, 2) == 456.09
    assert counts["active"] == 45_944_920_064
    assert counts["embedding"] == counts["lm_head"] == 200064 * 6144


def test_a_third_party_attention_in_the_stack_with_its_own_kwargs_and_factors():
    """Layer 1 is a mixer registered outside the zoo, with its own argument and residual factors; layer 2 a softmax
    layer with its own KV heads. The layer computes α·u + β·Attn(u) with those factors, and cached greedy decoding
    through every layer type equals the uncached argmax."""
    import tests.toy_lm  # noqa: F401  (registers toy_causal_mean)

    torch.manual_seed(0)
    layout = [
        "L",
        {"name": "toy_causal_mean", "alpha": 1.25, "beta": 0.5, "scale": 2.0},
        {"name": "S", "num_kv_heads": 1},
    ]
    config = {"hidden_size": 32, "num_heads": 2, "num_layers": 3, "attention": layout, "intermediate_size": 48,
              "num_experts": 2, "top_k": 1}  # fmt: skip
    model = HybridLM(config).double().eval()
    toy, soft = model.model.layers[1], model.model.layers[2]
    assert type(toy.self_attn).__name__ == "ToyCausalMean" and toy.self_attn.scale == 2.0
    assert (toy.attn_alpha, toy.attn_beta) == (1.25, 0.5) and soft.self_attn.num_kv_heads == 1
    h = torch.randn(2, 5, 32, dtype=torch.float64)
    u = toy.input_layernorm(h)
    h1 = 1.25 * u + 0.5 * toy.self_attn(u)
    u1 = toy.post_attention_layernorm(h1)
    expected = toy.mlp_alpha * u1 + toy.mlp(u1)
    torch.testing.assert_close(toy(h), expected)
    prompt = torch.randint(0, 257, (2, 4))
    out = model.generate(prompt, 5)  # a plugin mixer without a static cache: the dynamic path
    ids = prompt
    for _ in range(5):
        ids = torch.cat([ids, model(ids)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert out.tokens == ids[:, 4:].tolist()
