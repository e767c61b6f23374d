"""``zoo.cuda_graphs.GraphedStep``: a training step's loss, backward and clip, eager on the CPU and replayed as
CUDA graphs on the GPU, equal to the plain loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zoo.cuda_graphs import GraphedStep
from zoo.models.hybrid_lm import HybridLM

TINY = {
    "vocab_size": 61,
    "hidden_size": 32,
    "num_layers": 2,
    "attention": "LS",
    "num_heads": 2,
    "num_kv_heads": 1,
    "head_dim": 16,
    "ffn": "moe",
    "intermediate_size": 32,
    "num_experts": 4,
    "top_k": 2,
}


def lm_loss(model: nn.Module):
    """A next-token loss with a metric, as the RL task's update hands :class:`GraphedStep`."""

    def fn(inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        ids, weight = inputs["ids"], inputs["weight"]
        logits = model(ids[:, :-1]).float()
        nll = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
        loss = (nll * weight[:, None]).mean()
        return loss, {"nll": nll.mean().detach()}

    return fn


def batch(seed: int, b: int, t: int, device: str = "cpu") -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        "ids": torch.randint(0, TINY["vocab_size"], (b, t), generator=gen).to(device),
        "weight": torch.rand(b, generator=gen).to(device),
    }


def plain_steps(model, batches, lr, max_norm, autocast=None):
    """The loop the task had: zero the grads, loss, backward, clip, optimizer step; each forward under its own
    autocast region (fresh weight casts)."""
    fn = lm_loss(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    out = []
    for inputs in batches:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(autocast[0], dtype=autocast[1]) if autocast else torch.enable_grad():
            loss, metrics = fn(inputs)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        out.append((loss.detach(), metrics["nll"], norm, [p.grad.clone() for p in model.parameters()]))
        optimizer.step()
    return out


def graphed_steps(model, batches, lr, max_norm, autocast=None, **kw):
    """The same steps through :class:`GraphedStep`, all inside one outer autocast region, as Lightning runs a
    ``training_step``."""
    step = GraphedStep(lm_loss(model), list(model.parameters()), max_norm=max_norm, modules=[model], **kw)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    out = []
    with torch.autocast(autocast[0], dtype=autocast[1]) if autocast else torch.enable_grad():
        for inputs in batches:
            loss, metrics = step(inputs)
            grads = [p.grad.clone() for p in model.parameters()]
            out.append((loss, metrics["nll"], metrics["grad_norm"], grads))
            optimizer.step()
    return out, step


def assert_same_steps(got, want, atol):
    for (loss, nll, norm, grads), (loss_w, nll_w, norm_w, grads_w) in zip(got, want, strict=True):
        torch.testing.assert_close(loss.cpu(), loss_w.cpu(), rtol=0, atol=atol)
        torch.testing.assert_close(nll.cpu(), nll_w.cpu(), rtol=0, atol=atol)
        torch.testing.assert_close(norm.cpu(), norm_w.cpu(), rtol=0, atol=atol)
        for g, g_w in zip(grads, grads_w, strict=True):
            torch.testing.assert_close(g.cpu(), g_w.cpu(), rtol=0, atol=atol)


def model_pair(device: str = "cpu"):
    torch.manual_seed(0)
    a = HybridLM(TINY).to(device)
    b = HybridLM(TINY).to(device)
    b.load_state_dict(a.state_dict())
    return a, b


@pytest.mark.parametrize("max_norm", [1e-3, 100.0], ids=["clipped", "unclipped"])
def test_eager_step_equals_the_plain_loop_on_the_cpu(max_norm):
    """On the CPU the step runs eagerly: the loss, the metrics, the clipped gradients and the norm of each step
    equal the plain loop's, and the next step sets (does not accumulate) the gradients."""
    a, b = model_pair()
    batches = [batch(0, 3, 9), batch(1, 3, 9), batch(2, 2, 12)]
    want = plain_steps(a, batches, lr=0.5, max_norm=max_norm)
    got, step = graphed_steps(b, batches, lr=0.5, max_norm=max_norm)
    assert_same_steps(got, want, atol=1e-6)
    assert step.graphed == 0 and step.captures == 0
    assert (float(want[0][2]) > max_norm) == (max_norm < 1)  # the clipped case clips


def test_each_step_casts_the_updated_weights_under_one_outer_autocast():
    """Lightning runs the whole ``training_step`` in one autocast region, whose weight cache would hand every
    minibatch after the first the bf16 weights cast before the optimizer steps. Each step casts afresh: its losses
    equal those of steps run in autocast regions of their own (and differ from the cached, stale casts)."""
    a, b = model_pair()
    batches = [batch(0, 4, 10), batch(0, 4, 10)]
    autocast = ("cpu", torch.bfloat16)
    want = plain_steps(a, batches, lr=5.0, max_norm=100.0, autocast=autocast)
    got, _ = graphed_steps(b, batches, lr=5.0, max_norm=100.0, autocast=autocast)
    assert_same_steps(got, want, atol=1e-6)
    assert not torch.equal(got[0][0], got[1][0])  # the update changed the second (identical) minibatch's loss


def test_gradients_of_parameters_without_grad_are_left_alone():
    a, _ = model_pair()
    frozen = a.model.embed_tokens.weight.requires_grad_(False)
    step = GraphedStep(lm_loss(a), list(a.parameters()), max_norm=1.0)
    step(batch(0, 2, 8))
    assert frozen.grad is None and all(p.grad is not None for p in step.params)
    assert all(p is not frozen for p in step.params)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("dtype", [None, torch.bfloat16], ids=["fp32", "bf16-autocast"])
def test_graph_replays_equal_eager_steps_across_shapes(dtype):
    """On the GPU: shapes seen twice are captured and replayed; losses, norms and gradients of every step equal
    the eager loop's over shape changes (a new signature runs eagerly first) and LRU eviction."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    a, b = model_pair("cuda")
    shapes = [(3, 9), (3, 9), (3, 9), (2, 16), (3, 9), (2, 16), (2, 16), (4, 5), (4, 5), (3, 9)]
    batches = [batch(i, s[0], s[1], "cuda") for i, s in enumerate(shapes)]
    autocast = ("cuda", dtype) if dtype else None
    want = plain_steps(a, batches, lr=0.1, max_norm=0.5, autocast=autocast)
    got, step = graphed_steps(b, batches, lr=0.1, max_norm=0.5, autocast=autocast, max_graphs=2)
    assert_same_steps(got, want, atol=1e-5 if dtype is None else 2e-3)
    assert step.enabled and step.captures == 4 and step.graphed == 7  # (4, 5)'s capture evicted (3, 9)'s graph
    for p_a, p_b in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p_a, p_b, rtol=0, atol=1e-4 if dtype is None else 2e-2)


@pytest.mark.gpu
@cuda
def test_a_step_that_syncs_with_the_host_falls_back_to_eager_once():
    """A loss that reads a value on the host cannot be captured: one warning, then every step eagerly, equal."""
    a, b = model_pair("cuda")
    base = lm_loss(b)

    def syncing(inputs):
        loss, metrics = base(inputs)
        if float(loss) > 1e9:  # a host read: illegal while capturing
            loss = loss * 0
        return loss, metrics

    step = GraphedStep(syncing, list(b.parameters()), max_norm=1.0)
    batches = [batch(i, 2, 8, "cuda") for i in range(4)]
    with pytest.warns(RuntimeWarning, match="capturing the step failed"):
        outs = [step(x) for x in batches]
    assert not step.enabled and step.graphed == 0
    want = GraphedStep(lm_loss(a), list(a.parameters()), max_norm=1.0, enabled=False)
    for x, (loss, _) in zip(batches, outs, strict=True):
        torch.testing.assert_close(loss, want(x)[0], rtol=0, atol=1e-5)
    # the failed capture left the CUDA generator usable: a random draw (as Inductor's autotuning makes) runs
    assert torch.randn(4, device="cuda").isfinite().all()
