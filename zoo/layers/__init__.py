"""Small building blocks shared by components: normalisation and rotary embeddings."""

from zoo.layers.norm import RMSNorm
from zoo.layers.rope import RotaryEmbedding, apply_rotary

__all__ = ["RMSNorm", "RotaryEmbedding", "apply_rotary"]
