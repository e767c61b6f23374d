"""Moment Channel Attention (Jiang et al., *MCA: Moment Channel Attention Networks*, AAAI 2024).

Paper versus released code (``CSDLLab/MCA/moment.py``) — where they disagree this module follows:

* **second moment**: the code's *population standard deviation* ``√M₂`` (``moments=("mean", "std")``), not the
  paper's variance ``M₂``; ``"var"`` is available.
* **third moment**: the code's *standardised skewness* ``M₃ / (σ³ + ε)`` with ``ε = 1e-5`` added to ``σ³``, not
  the paper's raw ``M₃``; ``"m3"`` is available.
* **cross-moment convolution (CMC)**: the code's ``Conv1d(K → 1, k, padding=(k−1)//2, bias=True)``; the paper's
  per-moment weights ``α_k`` (Eq. 1) are absorbed into the convolution's K input channels, as in the code.
* **kernel size**: the *paper's* choice — k = 11 for MCA-E and k = 3 for MCA-S (Fig. 3 ablation, "we use these
  settings in our block and other experiments"); the code hard-codes k = 3 for both. ``kernel_size="eca"`` uses
  ECA's adaptive rule instead.
* **precision**: moments and the gate are computed in fp32 even under autocast (the cube overflows fp16).

timm's tooling works on models that contain it, as with SE and ECA: :func:`channel_moments` and
:func:`cross_moment_gate` are registered with ``torch.fx.wrap``, so FX (and timm's FX feature extraction) records
each as one call node instead of tracing into the custom autograd Function and the autocast region; under
``torch.jit.script`` the module computes the same formulas with plain ops (:func:`channel_moments_reference`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zoo.channel_attention.eca import eca_kernel_size
from zoo.registries import CHANNEL_ATTENTION

MOMENTS = ("mean", "std", "var", "skew", "m3")


def fp32_region(device: torch.device):
    """A context in which autocast is off on ``device`` (a no-op where autocast does not exist, e.g. meta)."""
    if device.type in ("cpu", "cuda", "xpu", "mps"):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


class _CentralMoments(torch.autograd.Function):
    """``(μ, σ, M₃)`` per channel over the spatial positions, with a fused analytic backward.

    Autograd through ``std_mean`` and ``(x − μ)³`` keeps and re-reads several full-size temporaries; the
    closed-form gradient needs one: with ``d = x − μ`` and N = H·W,

        ∂μ/∂x = 1/N,   ∂σ/∂x = d / (Nσ)  (0 where σ = 0),   ∂M₃/∂x = 3 (d² − σ²) / N,

    so ``∂L/∂x = (a − cσ²) + d·(b + c·d)`` with ``a = g_μ/N``, ``b = g_σ/(Nσ)``, ``c = 3 g_M₃/N`` per channel.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, with_third: bool):  # type: ignore[override]
        # two passes (centre, then average powers): stable, and far faster on CPUs than torch.std_mean
        mean = x.mean((2, 3))
        centred = x - mean[..., None, None]
        powers = centred.square()
        std = powers.mean((2, 3)).sqrt_()
        third = powers.mul_(centred).mean((2, 3)) if with_third else None
        ctx.save_for_backward(x, mean, std)
        return mean, std, third

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_mean, grad_std, grad_third):  # type: ignore[override]
        x, mean, std = ctx.saved_tensors
        n = x.shape[2] * x.shape[3]
        a = grad_mean / n if grad_mean is not None else torch.zeros_like(mean)
        b = torch.where(std > 0, grad_std / (n * std), 0.0) if grad_std is not None else torch.zeros_like(std)
        c = 3.0 * grad_third / n if grad_third is not None else None
        d = x - mean[..., None, None]
        if c is None:
            grad = d.mul_(b[..., None, None]).add_(a[..., None, None])
        else:
            slope = d * c[..., None, None]
            grad = slope.add_(b[..., None, None]).mul_(d).add_((a - c * std.square())[..., None, None])
        return grad, None


@torch.fx.wrap
def channel_moments(x: torch.Tensor, moments: Sequence[str] = ("mean", "skew"), eps: float = 1e-5) -> torch.Tensor:
    """Per-channel moments over the spatial positions, stacked as CMC's input channels, in fp32.

    With ``μ = E[x]``, ``M_k = E[(x − μ)^k]`` over the H·W positions of each channel (population statistics):

    * ``"mean"``: ``μ`` (M1)             * ``"var"``: ``M₂``             * ``"std"``: ``σ = √M₂``
    * ``"skew"``: ``M₃ / (σ³ + eps)``    * ``"m3"``: ``M₃``

    Args:
        x: ``[B, C, H, W]`` of any float dtype.
        moments: names from :data:`MOMENTS`, in the order of the output rows.
        eps: added to ``σ³`` in the skewness.

    Returns:
        ``[B, K, C]`` fp32 with ``K = len(moments)``.
    """
    unknown = [m for m in moments if m not in MOMENTS]
    if unknown or not moments:
        raise ValueError(f"unknown MCA moments {unknown or list(moments)}; valid: {', '.join(MOMENTS)}")
    with fp32_region(x.device):
        mean, std, third = _CentralMoments.apply(x.float(), "skew" in moments or "m3" in moments)
        rows = {
            "mean": lambda: mean,
            "std": lambda: std,
            "var": lambda: std.square(),
            "m3": lambda: third,
            "skew": lambda: third / (std.pow(3) + eps),
        }
        return torch.stack([rows[m]() for m in moments], dim=1)


def channel_moments_reference(x: torch.Tensor, moments: list[str], eps: float = 1e-5) -> torch.Tensor:
    """:func:`channel_moments` with plain autograd (no fused backward, no autocast region): TorchScript's path and
    the test oracle. ``x`` is cast to fp32; σ's gradient is 0 where σ = 0, as in the fused backward.

    Returns:
        ``[B, K, C]`` fp32.
    """
    x = x.float()
    mean = x.mean((2, 3))
    centred = x - mean[..., None, None]
    var = centred.square().mean((2, 3))
    positive = var > 0
    std = torch.where(positive, torch.where(positive, var, torch.ones_like(var)).sqrt(), torch.zeros_like(var))
    rows: list[torch.Tensor] = []
    for name in moments:
        if name == "mean":
            rows.append(mean)
        elif name == "std":
            rows.append(std)
        elif name == "var":
            rows.append(var)
        else:
            third = centred.pow(3).mean((2, 3))
            rows.append(third / (std.pow(3) + eps) if name == "skew" else third)
    return torch.stack(rows, dim=1)


def _gate(stats: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int) -> torch.Tensor:
    logits = F.conv1d(stats, weight.float(), bias.float() if bias is not None else None, padding=padding)
    return logits.sigmoid()  # [B, 1, C]


@torch.fx.wrap
def cross_moment_gate(
    stats: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int
) -> torch.Tensor:
    """CMC and the sigmoid in fp32 (autocast off): ``σ(Conv1d(stats))`` for ``stats`` ``[B, K, C]`` → ``[B, 1, C]``."""
    with fp32_region(stats.device):
        return _gate(stats, weight, bias, padding)


@CHANNEL_ATTENTION.register("mca_t", moments=("mean", "std", "skew"), kernel_size=3)
@CHANNEL_ATTENTION.register("mca_e", moments=("mean", "std"), kernel_size=11)
@CHANNEL_ATTENTION.register("mca_s", moments=("mean", "skew"), kernel_size=3)
@CHANNEL_ATTENTION.register("mca", moments=("mean", "skew"), kernel_size=3)  # the paper's default: MCA-S
class MomentChannelAttention(nn.Module):
    """MCA block: ``y = x · σ(CMC([M₁; M_j]))`` (paper Eq. 6–10) with CMC a Conv1d across channels.

    The K moment rows (see :func:`channel_moments`) are the Conv1d's input channels and the convolution slides
    along the channel axis, so it fuses the moments and mixes neighbouring channels in one op; ``2k + 1``
    parameters for two moments. Registered presets: ``mca_e`` (mean, std; k = 11), ``mca_s`` / ``mca``
    (mean, skew; k = 3), ``mca_t`` (mean, std, skew; k = 3). The module keeps no batch statistics, so it is
    unaffected by batch size and frozen BatchNorm.

    Args:
        channels: C (used only by ``kernel_size="eca"``).
        moments: which moments, in order.
        kernel_size: an odd int, or ``"eca"`` for ECA's adaptive size from ``channels``.
        eps: added to ``σ³`` in the skewness.
        bias: bias of the Conv1d (the code has one).

    Shapes: ``x`` ``[B, C, H, W]`` → ``[B, C, H, W]`` (dtype of ``x``).
    """

    def __init__(
        self,
        channels: int | None = None,
        *,
        moments: Sequence[str] = ("mean", "skew"),
        kernel_size: int | str = 3,
        eps: float = 1e-5,
        bias: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.moments = tuple(moments)
        unknown = [m for m in self.moments if m not in MOMENTS]
        if unknown or not self.moments:
            raise ValueError(f"unknown MCA moments {unknown or list(moments)}; valid: {', '.join(MOMENTS)}")
        if kernel_size == "eca":
            if channels is None:
                raise ValueError("MCA kernel_size='eca' needs the channel count")
            kernel_size = eca_kernel_size(channels)
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 != 1:
            raise ValueError(f"MCA kernel_size must be a positive odd int or 'eca', got {kernel_size!r}")
        self.eps = eps
        self.conv = nn.Conv1d(
            len(self.moments),
            1,
            kernel_size,
            padding=(kernel_size - 1) // 2,
            bias=bias,
            device=device,
            dtype=dtype,
        )

    def extra_repr(self) -> str:
        return f"moments={self.moments}, eps={self.eps}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padding = self.conv.padding[0]
        if torch.jit.is_scripting():  # the same formulas in plain ops (TorchScript has no autograd.Function)
            gate = _gate(
                channel_moments_reference(x, list(self.moments), self.eps), self.conv.weight, self.conv.bias, padding
            )
        else:
            stats = channel_moments(x, self.moments, self.eps)  # [B, K, C] fp32
            gate = cross_moment_gate(stats, self.conv.weight, self.conv.bias, padding)  # [B, 1, C] fp32
        return x * gate.to(x.dtype).transpose(1, 2).unsqueeze(-1)
