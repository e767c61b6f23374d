"""Hugging Face interop: our HybridLM and transformers' MiniMaxForCausalLM give the same logits, both ways round."""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="pip install -e '.[hf]'")
from transformers import MiniMaxConfig, MiniMaxForCausalLM  # noqa: E402

from zoo.interop.minimax import config_to_hf, decay_convention_of, from_hf, to_hf  # noqa: E402
from zoo.models import HybridLM, HybridLMConfig  # noqa: E402

TOLERANCE = 1e-4


def hf_tiny(**overrides) -> MiniMaxForCausalLM:
    """A random tiny MiniMax exercising every option the port has: both layer types in an uneven order, GQA,
    distinct α/β residual factors per sub-layer, several experts with top-2, untied head. Weights of std 0.1 give
    logits of order 1, where a 0.1 % error in a decay rate already moves them by 4e-4 (> the tolerance)."""
    values = dict(
        vocab_size=97, hidden_size=32, intermediate_size=24, num_hidden_layers=5, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, num_local_experts=4, num_experts_per_tok=2,
        layer_types=["linear_attention", "linear_attention", "full_attention", "linear_attention", "full_attention"],
        rope_parameters={"rope_type": "default", "rope_theta": 10_000.0},
        linear_attn_alpha_factor=1.7, linear_attn_beta_factor=0.9, full_attn_alpha_factor=1.3,
        full_attn_beta_factor=1.1, mlp_alpha_factor=1.5, mlp_beta_factor=0.8, rms_norm_eps=1e-5,
        tie_word_embeddings=False, attn_implementation="eager", initializer_range=0.1,
    )  # fmt: skip
    values.update(overrides)
    torch.manual_seed(0)
    model = MiniMaxForCausalLM(MiniMaxConfig(**values)).eval()
    with torch.no_grad():  # HF initialises norms to ones: randomise them so that a swapped norm would show
        for name, param in model.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name:
                param.uniform_(0.5, 1.5)
    return model


def logits_of(model, ids):
    with torch.no_grad():
        out = model(ids)
    return out.logits if hasattr(out, "logits") else out


@pytest.mark.parametrize("heads", [4, 8])
def test_from_hf_object_matches(heads):
    hf = hf_tiny(num_attention_heads=heads, num_key_value_heads=2, head_dim=8)
    ours = from_hf(hf).eval()
    ids = torch.randint(0, 97, (2, 300))  # crosses HF's 256-token block
    diff = (logits_of(ours, ids) - logits_of(hf, ids)).abs().max().item()
    assert diff <= TOLERANCE


def test_to_hf_directory_loads_in_transformers_and_matches(tmp_path):
    torch.manual_seed(1)
    config = HybridLMConfig(init_std=0.1,
        vocab_size=97, hidden_size=32, num_layers=4, attention="LSLL", num_heads=4, num_kv_heads=1, head_dim=8,
        rope_fraction=1.0, rope_theta=5e5, intermediate_size=24, num_experts=3, top_k=2, norm="post",
        softmax_alpha=2.0, ffn_beta=0.7, decay_convention="hf", attention_backend="torch",
    )  # fmt: skip
    ours = HybridLM(config).eval()
    path = to_hf(ours, tmp_path / "export")
    assert (path / "config.json").is_file() and list(path.glob("*.safetensors"))
    assert json.loads((path / "config.json").read_text())["layer_types"][1] == "full_attention"
    hf = MiniMaxForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
    ids = torch.randint(0, 97, (2, 40))
    assert (logits_of(ours, ids) - logits_of(hf, ids)).abs().max().item() <= TOLERANCE
    back = from_hf(path)  # and from the directory
    assert (logits_of(back, ids) - logits_of(ours, ids)).abs().max().item() <= TOLERANCE
    assert not list(tmp_path.glob(".export.*"))  # no staging directory left behind


def test_minimax_convention_exports_when_heads_are_a_power_of_two(tmp_path):
    config = HybridLMConfig(
        init_std=0.1, vocab_size=50, hidden_size=32, num_layers=3, attention="LLS", num_heads=4, head_dim=8,
        rope_fraction=1.0, intermediate_size=16, num_experts=2, top_k=1, attention_backend="torch",
    )  # fmt: skip
    ours = HybridLM(config).eval()
    hf = MiniMaxForCausalLM.from_pretrained(to_hf(ours, tmp_path / "m"), attn_implementation="eager").eval()
    ids = torch.randint(0, 50, (1, 33))
    assert (logits_of(ours, ids) - logits_of(hf, ids)).abs().max().item() <= TOLERANCE


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"ffn": "dense"}, "MoE in every layer"),
        ({"norm": "pre"}, "post-norm only"),
        ({"rope_fraction": 0.5}, "rotates the whole head"),
        ({"lightning_norm_eps": 1e-5}, "hard-codes 1e-6"),
    ],
)
def test_to_hf_refuses_what_the_port_cannot_express(overrides, message):
    values = dict(vocab_size=50, hidden_size=24, num_layers=2, attention="LS", num_heads=4, head_dim=8,
                  rope_fraction=1.0, intermediate_size=16, num_experts=2, top_k=1)  # fmt: skip
    with pytest.raises(ValueError, match=message):
        config_to_hf(HybridLMConfig(**{**values, **overrides}))


def pattern(depth: int, last: str) -> str:
    """A layer pattern of ``depth`` layers mixing both types and ending in ``last``."""
    return ("LLS" * depth)[: depth - 1] + last


@pytest.mark.parametrize("convention", ["minimax", "hf"])
@pytest.mark.parametrize("last", ["L", "S"])
@pytest.mark.parametrize("depth", range(2, 9))
def test_round_trip_is_exact_for_every_depth_pattern_and_convention(tmp_path, depth, last, convention):
    """zoo → HF directory → transformers → zoo, at 2048 tokens (eight of HF's 256-token blocks), where a deepest
    lightning layer with the port's formula instead of MiniMax's factor moved the logits by ~7e-4. Three heads
    (not a power of two: ALiBi's slopes differ from the port's) at odd depths."""
    heads = 3 if depth % 2 else 4
    torch.manual_seed(depth)
    config = HybridLMConfig(
        init_std=0.1, vocab_size=50, hidden_size=24, num_layers=depth, attention=pattern(depth, last),
        num_heads=heads, num_kv_heads=1, head_dim=8, rope_fraction=1.0, intermediate_size=16, num_experts=2, top_k=1,
        decay_convention=convention, attention_backend="torch",
    )  # fmt: skip
    ours = HybridLM(config).eval()
    hf = MiniMaxForCausalLM.from_pretrained(to_hf(ours, tmp_path / "m"), attn_implementation="eager").eval()
    ids = torch.randint(0, 50, (1, 2048))
    want = logits_of(ours, ids)
    assert (logits_of(hf, ids) - want).abs().max().item() <= TOLERANCE
    back = from_hf(hf).eval()
    for i, layer in enumerate(back.model.layers):
        if config.attention_layout[i] == "lightning":
            assert torch.equal(layer.self_attn.decay.float(), ours.model.layers[i].self_attn.decay.float()), i
    assert (logits_of(back, ids) - want).abs().max().item() <= TOLERANCE


def test_from_hf_names_the_buffer_whose_rates_match_no_convention():
    hf = hf_tiny()
    assert decay_convention_of(hf) == "hf"
    with torch.no_grad():
        hf.model.layers[3].self_attn.slope_rate.mul_(1.5)
    with pytest.raises(ValueError, match=r"model\.layers\.3\.self_attn\.slope_rate .* matches neither"):
        from_hf(hf)
