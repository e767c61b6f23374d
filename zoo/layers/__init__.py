"""Small building blocks shared by components: normalisation, rotary embeddings, the fused LM-head loss."""

from zoo.layers.linear_cross_entropy import linear_cross_entropy
from zoo.layers.norm import RMSNorm
from zoo.layers.rope import RotaryEmbedding, apply_rotary

__all__ = ["RMSNorm", "RotaryEmbedding", "apply_rotary", "linear_cross_entropy"]
