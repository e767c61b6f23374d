"""The LM head and its cross-entropy in one op, chunked over tokens: the ``[N, vocab]`` logits never exist whole.

``loss = mean_{i: y_i ≠ ignore} ( logsumexp_v(z_i) − z_{i, y_i} )``, ``z = h · Wᵀ`` (``h`` ``[N, d]``, ``W``
``[V, d]``). The unfused path keeps the logits (``[N, V]`` in the compute dtype), their fp32 copy and the fp32
softmax of the backward alive at once: at N = 32K tokens and V = 32K that is 2 + 4 + 4 GiB for a 0.5-GiB model's
activations. Here the tokens go through in chunks of ``chunk_size``; while the forward has a chunk's fp32 logits it
also forms their gradient ``(softmax(z) − onehot(y)) / n_valid`` and from it the chunk's ``∂h = ∂z · W`` and adds
``∂zᵀ · h`` to ``∂W`` (fp32) — the design of Liger-Kernel's fused linear cross-entropy, in plain PyTorch (cuBLAS
matmuls; no Triton needed), so peak memory is one chunk's ``[chunk, V]`` instead of ``[N, V]``. The backward only
scales the stored gradients by the incoming scalar.

Numerics match ``F.cross_entropy(F.linear(h, W).float(), y)``: each chunk's logits are the same matmul in ``h``'s
dtype (in fp32 when ``fp32_logits``, as the LM head's ``lm_head_fp32`` computes them), the softmax in fp32, ``∂z`` is
cast to the matmul dtype as autograd's backward of ``.float()`` would; ``∂W`` is accumulated over chunks in fp32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["DEFAULT_CHUNK_ELEMENTS", "chunk_rows", "linear_cross_entropy"]

#: fp32 logits per chunk when ``chunk_size`` is None: 2²⁶ elements = 256 MiB (2,048 tokens at a 32K vocabulary).
DEFAULT_CHUNK_ELEMENTS = 1 << 26


def chunk_rows(vocab_size: int, chunk_size: int | None = None) -> int:
    """Tokens per chunk: ``chunk_size``, or as many as keep a chunk's fp32 logits at :data:`DEFAULT_CHUNK_ELEMENTS`
    (at least 256)."""
    if chunk_size is not None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        return chunk_size
    return max(256, DEFAULT_CHUNK_ELEMENTS // max(vocab_size, 1))


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, labels, ignore_index: int, chunk: int, fp32_logits: bool):
        n = hidden.shape[0]
        acc = torch.promote_types(hidden.dtype, torch.float32)  # fp32 (fp64 for fp64 inputs)
        matmul_dtype = acc if fp32_logits else hidden.dtype
        w = weight.to(matmul_dtype)
        valid = labels != ignore_index
        count = valid.sum()
        denominator = count.clamp(min=1).to(acc)
        grad_needed = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        total = torch.zeros((), dtype=acc, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros(weight.shape, dtype=acc, device=weight.device) if grad_needed else None
        for start in range(0, n, chunk):
            h = hidden[start : start + chunk].to(matmul_dtype)
            y = labels[start : start + chunk]
            keep = valid[start : start + chunk]
            logits = F.linear(h, w).to(acc)  # [c, V]
            lse = torch.logsumexp(logits, dim=-1)
            target = logits.gather(1, y.clamp(min=0)[:, None])[:, 0]
            total = total + torch.where(keep, lse - target, 0.0).sum()
            if not grad_needed:
                continue
            grad = logits.sub_(lse[:, None]).exp_()  # softmax, in place of the logits
            grad.scatter_add_(1, y.clamp(min=0)[:, None], torch.full_like(lse, -1.0)[:, None])
            grad.mul_((keep.to(acc) / denominator)[:, None])  # ignored rows: zero gradient
            grad = grad.to(matmul_dtype)
            if grad_hidden is not None:
                grad_hidden[start : start + chunk] = (grad @ w).to(hidden.dtype)
            if grad_weight is not None and ctx.needs_input_grad[1]:
                grad_weight += grad.t() @ h  # [V, d]: a matmul in the compute dtype, summed over chunks in fp32
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.weight_dtype = weight.dtype
        return total / denominator

    @staticmethod
    def backward(ctx, grad_output):
        grad_hidden, grad_weight = ctx.saved_tensors
        dh = dw = None
        if ctx.needs_input_grad[0]:
            dh = grad_hidden * grad_output.to(grad_hidden.dtype)
        if ctx.needs_input_grad[1]:
            dw = (grad_weight * grad_output).to(ctx.weight_dtype)
        return dh, dw, None, None, None, None


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    ignore_index: int = -100,
    chunk_size: int | None = None,
    fp32_logits: bool = False,
) -> torch.Tensor:
    """Mean cross-entropy of the logits ``hidden · weightᵀ`` against ``labels``, without materialising the logits.

    Args:
        hidden: ``[..., d]`` final hidden states (any leading shape; flattened to ``[N, d]``).
        weight: ``[V, d]`` the LM head's weight.
        labels: ``[...]`` int64 targets, ``ignore_index`` where no loss is taken.
        ignore_index: the label of positions without loss.
        chunk_size: tokens per chunk (None: :func:`chunk_rows`).
        fp32_logits: compute the logits' matmul in fp32 (``lm_head_fp32``) instead of ``hidden``'s dtype.

    Returns:
        a scalar fp32 (fp64 for fp64 ``hidden``): the mean over the non-ignored tokens (0 when every token is
        ignored), differentiable in ``hidden`` and ``weight``.
    """
    if hidden.shape[:-1] != labels.shape:
        raise ValueError(f"labels {tuple(labels.shape)} must match hidden's leading shape {tuple(hidden.shape[:-1])}")
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
        raise ValueError(f"weight {tuple(weight.shape)} must be [vocab, {hidden.shape[-1]}]")
    hidden = hidden.reshape(-1, hidden.shape[-1])
    chunk = chunk_rows(weight.shape[0], chunk_size)
    return _LinearCrossEntropy.apply(hidden, weight, labels.reshape(-1), ignore_index, chunk, fp32_logits)
