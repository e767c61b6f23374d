"""The fused, chunked LM head + cross-entropy (zoo.layers.linear_cross_entropy) against the unfused loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zoo.layers import linear_cross_entropy
from zoo.models import HybridLM


def _unfused(hidden, weight, labels, fp32_logits=False):
    acc = torch.promote_types(hidden.dtype, torch.float32)
    logits = F.linear(hidden.to(acc), weight.to(acc)) if fp32_logits else F.linear(hidden, weight)
    return F.cross_entropy(logits.to(acc).flatten(0, -2), labels.flatten(), ignore_index=-100)


@pytest.mark.parametrize("chunk_size", [1, 7, 16, 1000])
def test_equals_the_unfused_loss_and_gradients_in_fp64(chunk_size):
    torch.manual_seed(0)
    hidden = torch.randn(3, 13, 24, dtype=torch.float64, requires_grad=True)  # 39 tokens: partial last chunks
    weight = torch.randn(53, 24, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 53, (3, 13))
    labels[:, ::4] = -100
    loss = linear_cross_entropy(hidden, weight, labels, chunk_size=chunk_size)
    (2.5 * loss).backward()
    grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    reference = _unfused(hidden, weight, labels)
    (2.5 * reference).backward()
    assert loss.dtype == torch.float64
    torch.testing.assert_close(loss, reference, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grads[0], hidden.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grads[1], weight.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("fp32_logits", [False, True])
def test_bf16_matches_the_unfused_bf16_path(fp32_logits):
    torch.manual_seed(1)
    hidden = torch.randn(45, 32, dtype=torch.bfloat16, requires_grad=True)
    weight = (0.2 * torch.randn(70, 32)).to(torch.bfloat16).requires_grad_()
    labels = torch.randint(0, 70, (45,))
    loss = linear_cross_entropy(hidden, weight, labels, chunk_size=16, fp32_logits=fp32_logits)
    loss.backward()
    grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    reference = _unfused(hidden, weight, labels, fp32_logits)
    reference.backward()
    torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grads[0], hidden.grad, rtol=2e-2, atol=1e-4)
    torch.testing.assert_close(grads[1], weight.grad, rtol=2e-2, atol=1e-4)
    assert grads[1].dtype == torch.bfloat16


def test_every_token_ignored_gives_zero_loss_and_zero_gradients():
    hidden = torch.randn(5, 8, requires_grad=True)
    weight = torch.randn(11, 8, requires_grad=True)
    loss = linear_cross_entropy(hidden, weight, torch.full((5,), -100))
    loss.backward()
    assert float(loss.detach()) == 0.0 and not hidden.grad.any() and not weight.grad.any()


def test_without_grad_it_only_computes_the_loss():
    hidden, weight, labels = torch.randn(9, 8), torch.randn(11, 8), torch.randint(0, 11, (9,))
    with torch.no_grad():
        loss = linear_cross_entropy(hidden, weight, labels, chunk_size=4)
    torch.testing.assert_close(loss, _unfused(hidden, weight, labels))


def test_bad_shapes_are_clear_errors():
    with pytest.raises(ValueError, match="labels"):
        linear_cross_entropy(torch.randn(4, 8), torch.randn(11, 8), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="weight"):
        linear_cross_entropy(torch.randn(4, 8), torch.randn(11, 9), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="chunk_size"):
        linear_cross_entropy(torch.randn(4, 8), torch.randn(11, 8), torch.zeros(4, dtype=torch.long), chunk_size=0)


@pytest.mark.parametrize("lm_head_fp32", [False, True])
def test_hybrid_lm_forward_loss_equals_the_loss_of_its_logits(lm_head_fp32):
    torch.manual_seed(2)
    config = dict(vocab_size=61, hidden_size=32, num_layers=2, attention="LS", num_heads=2, num_kv_heads=1,
                  head_dim=16, ffn="moe", intermediate_size=32, num_experts=4, top_k=2,
                  lm_head_fp32=lm_head_fp32)  # fmt: skip
    model = HybridLM(config)
    ids = torch.randint(0, 61, (2, 11))
    labels = torch.randint(0, 61, (2, 11))
    labels[0, :3] = -100
    cu_seqlens = torch.tensor([0, 5, 22], dtype=torch.int32)
    fused = model.forward_loss(ids, labels, cu_seqlens=cu_seqlens, chunk_size=6)
    fused.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    logits = model(ids, cu_seqlens=cu_seqlens)
    reference = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100)
    reference.backward()
    torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-6)
    for name, p in model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(grads[name], p.grad, rtol=1e-4, atol=1e-6, msg=name)
