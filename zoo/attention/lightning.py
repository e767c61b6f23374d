"""MiniMax-01's lightning-attention token mixer (``ATTENTION`` name ``lightning``)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from kernels.lightning_attention import lightning_attention, lightning_attention_decode
from zoo.attention.cache import LightningCache, StaticLightningCache
from zoo.layers import RMSNorm
from zoo.registries import ATTENTION


def alibi_slopes(num_heads: int) -> torch.Tensor:
    """ALiBi's geometric head slopes ``2^{−8(h+1)/H}``; for H not a power of two, ALiBi's rule: the slopes of the
    nearest lower power of two p, then every other slope of 2p (Press et al. 2022; MiniMax's
    ``_build_slope_tensor``)."""

    def power_of_two(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start ** (i + 1) for i in range(n)]

    if math.log2(num_heads).is_integer():
        slopes = power_of_two(num_heads)
    else:
        lower = 2 ** math.floor(math.log2(num_heads))
        slopes = power_of_two(lower) + power_of_two(2 * lower)[0::2][: num_heads - lower]
    return torch.tensor(slopes, dtype=torch.float32)


DECAY_CONVENTIONS = ("minimax", "hf")


def decay_rates(num_heads: int, layer_idx: int, num_layers: int, convention: str = "minimax") -> torch.Tensor:
    """MiniMax's per-head decay rates of layer ``l``: ``s_h = base_h · (1 − l/(L−1) + 1e−5)`` (minimax.md §1.3).

    ``l`` is the global layer index (softmax layers included) and ``L`` the number of layers.

    ``convention="hf"`` reproduces Hugging Face's port exactly (``transformers`` ``MiniMaxLightningAttention``):
    ``base_h = 2^{−8(h+1)/H}`` for every H (no ALiBi rule for H not a power of two) and the layer factor
    ``1 − l/(L−1+1e−5) + 1e−5``. For a power-of-two H the two agree to < 1e−5 relative in every layer but the
    last: there MiniMax's factor is 1e−5 and the port's 1e−5·L/(L−1) (100 % more at L = 2, 14 % at L = 8).
    :mod:`zoo.interop.minimax` converts either convention exactly through the port's decay buffers.
    """
    if not 0 <= layer_idx < num_layers:
        raise ValueError(f"layer_idx must be in [0, num_layers={num_layers}), got {layer_idx}")
    if convention == "minimax":
        depth = layer_idx / (num_layers - 1) if num_layers > 1 else 0.0
        return alibi_slopes(num_heads) * (1 - depth + 1e-5)
    if convention == "hf":
        base = 1 / (2 ** (8 / num_heads))
        slopes = torch.tensor([base ** (h + 1) for h in range(num_heads)], dtype=torch.float64)
        return (slopes * (1 - layer_idx / (num_layers - 1 + 1e-5) + 1e-5)).float()
    raise ValueError(f"decay convention '{convention}' is unknown; valid: {', '.join(DECAY_CONVENTIONS)}")


@ATTENTION.register("lightning")
class LightningAttention(nn.Module):
    """``y = W_out( σ(W_gate x) ⊙ RMSNorm( LA(SiLU(q), SiLU(k), SiLU(v)) ) )`` (MiniMax-01 §2.2, Fig. 3).

    ``qkv_proj`` produces, per head, ``[q_h | k_h | v_h]`` (interleaved per head, MiniMax's checkpoint layout);
    SiLU goes on all three; LA is the decayed causal linear attention of :mod:`kernels.lightning_attention` with
    :func:`decay_rates`; one RMSNorm spans all heads' features; the sigmoid gate is computed from the block input.
    Parameter names follow Hugging Face's MiniMax (``qkv_proj``, ``output_gate``, ``norm``, ``out_proj``).

    Args:
        dim: model width.
        num_heads: H.
        layer_idx, num_layers: this layer's global index and the stack's depth (they set the decay).
        head_dim: D (default ``dim // num_heads``).
        norm_eps: RMSNorm epsilon (MiniMax's code: 1e-6).
        decay_convention: ``minimax`` (default) or ``hf`` (Hugging Face's port, see :func:`decay_rates`).
        backend: kernel backend (``auto``, ``torch``, ``triton``).

    Shapes: ``x`` ``[B, T, dim]`` → ``[B, T, dim]``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        layer_idx: int,
        num_layers: int,
        head_dim: int | None = None,
        norm_eps: float = 1e-6,
        decay_convention: str = "minimax",
        backend: str = "auto",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.num_heads = num_heads
        self.head_dim = head_dim or dim // num_heads
        self.layer_idx = layer_idx
        self.num_layers = num_layers
        self.backend = backend
        inner = num_heads * self.head_dim
        self.qkv_proj = nn.Linear(dim, 3 * inner, bias=False, **factory)
        self.output_gate = nn.Linear(dim, inner, bias=False, **factory)
        self.norm = RMSNorm(inner, norm_eps, **factory)
        self.out_proj = nn.Linear(inner, dim, bias=False, **factory)
        self.decay_convention = decay_convention
        # constants, not parameters: fp64 and fp32 copies that follow the module's device but never its dtype, and
        # are recomputed whenever the module moves (so they are real after a meta build's to_empty); plain buffers,
        # so a compiled block (CUDA graphs included) reads them as graph inputs
        self.register_buffer("decay", self._decay_rates(torch.device("cpu")), persistent=False)
        self.register_buffer("decay_fp32", self.decay.float(), persistent=False)

    def _decay_rates(self, device: torch.device) -> torch.Tensor:
        with torch.device(device):
            return decay_rates(self.num_heads, self.layer_idx, self.num_layers, self.decay_convention).double()

    def reset_buffers(self) -> None:
        """Recompute the decay constants where ``decay`` now lives (after a move, ``to_empty`` or a cast)."""
        device = self.decay.device
        if device.type != "meta":
            self._buffers["decay"] = self._decay_rates(device)
            self._buffers["decay_fp32"] = self._buffers["decay"].float()

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        self.reset_buffers()  # fn moved the constants; their values and dtype are put back
        return self

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, head_dim={self.head_dim}, layer={self.layer_idx}/{self.num_layers}"

    def _rates(self, x: torch.Tensor) -> torch.Tensor:
        """The decay rates ``[H]``, fp32 (fp64 for fp64 inputs) whatever the module's dtype."""
        return self.decay if x.dtype == torch.float64 else self.decay_fp32

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        qkv = F.silu(self.qkv_proj(x)).view(*x.shape[:-1], self.num_heads, 3 * self.head_dim)
        return qkv.split(self.head_dim, dim=-1)  # each [B, T, H, D]

    def _mix(self, x: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        o = self.norm(o.reshape(*x.shape[:-1], -1))
        return self.out_proj(torch.sigmoid(self.output_gate(x)) * o)

    def forward(
        self, x: torch.Tensor, *, cu_seqlens: torch.Tensor | None = None, cache: LightningCache | None = None
    ) -> torch.Tensor:
        """Prefill or training over whole sequences (packed with ``cu_seqlens``: ``x`` is ``[1, ΣT, dim]``).

        With a ``cache``, the attention starts from ``cache.state`` and leaves the state after the last token
        there, ready for :meth:`step`.
        """
        q, k, v = self._qkv(x)
        decay = self._rates(x)
        if cache is None:
            o = lightning_attention(q, k, v, decay, cu_seqlens=cu_seqlens, backend=self.backend)
        else:
            o, cache.state = lightning_attention(
                q,
                k,
                v,
                decay,
                initial_state=cache.state,
                output_final_state=True,
                cu_seqlens=cu_seqlens,
                backend=self.backend,
            )
        return self._mix(x, o)

    def step(self, x: torch.Tensor, cache: LightningCache) -> torch.Tensor:
        """One generated token per sequence: ``x`` ``[B, 1, dim]``; updates ``cache.state`` in place."""
        q, k, v = self._qkv(x)
        if cache.state is None:
            dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
            cache.state = x.new_zeros(x.shape[0], self.num_heads, self.head_dim, self.head_dim, dtype=dtype)
        o, cache.state = lightning_attention_decode(
            q, k, v, self._rates(x), cache.state, inplace=True, backend=self.backend
        )
        return self._mix(x, o)

    def new_cache(self) -> LightningCache:
        return LightningCache()

    # ------------------------------------------------------------------------------ static cache (zoo.generation)
    def new_static_cache(
        self, batch_size: int, max_len: int, *, device: torch.device | str, dtype: torch.dtype
    ) -> StaticLightningCache:
        """Zeroed states for ``batch_size`` slots (fp32; fp64 for fp64 models). ``max_len`` does not matter: the
        state's size is independent of the length, which is the point of lightning attention."""
        state_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        shape = (batch_size, self.num_heads, self.head_dim, self.head_dim)
        return StaticLightningCache(torch.zeros(shape, device=device, dtype=state_dtype))

    def prefill_static(
        self, x: torch.Tensor, cu_seqlens: torch.Tensor, cache: StaticLightningCache, slots: torch.Tensor
    ) -> torch.Tensor:
        """Packed prompts ``x`` ``[1, ΣT, dim]`` (N documents at ``cu_seqlens``) from zero states; document ``n``'s
        final state lands in ``cache.state[slots[n]]``. Returns ``[1, ΣT, dim]``."""
        q, k, v = self._qkv(x)
        o, final = lightning_attention(
            q, k, v, self._rates(x), output_final_state=True, cu_seqlens=cu_seqlens, backend=self.backend
        )
        cache.state.index_copy_(0, slots, final.to(cache.state.dtype))
        return self._mix(x, o)

    def decode_static(
        self, x: torch.Tensor, cache: StaticLightningCache, positions: torch.Tensor, span: int | None = None
    ) -> torch.Tensor:
        """One token for each of the first ``B = x.shape[0]`` slots: ``x`` ``[B, 1, dim]``; their states are
        updated in place (no allocation, no host sync: CUDA-graph safe). ``positions`` and ``span`` are unused
        (the decay is relative; the state does not grow)."""
        q, k, v = self._qkv(x)
        o, _ = lightning_attention_decode(
            q, k, v, self._rates(x), cache.state[: x.shape[0]], inplace=True, backend=self.backend
        )
        return self._mix(x, o)
