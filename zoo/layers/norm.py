"""RMSNorm computed in fp32, as MiniMax's and Llama's reference code do."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """``y = x · rsqrt(mean(x²) + eps) · w`` over the last dimension, in fp32 (or fp64), returned in the input dtype.

    Shapes: ``x`` ``[..., dim]`` → ``[..., dim]``. The parameter is named ``weight`` (Hugging Face's name).
    """

    def __init__(self, dim: int, eps: float = 1e-6, *, device=None, dtype=None) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = torch.promote_types(x.dtype, torch.float32)  # fp32 math (fp64 stays fp64)
        # F.rms_norm is one fused kernel (forward and backward) on CUDA; the same formula elsewhere
        return F.rms_norm(x.to(dtype), (x.shape[-1],), self.weight.to(dtype), self.eps).to(x.dtype)
