"""Model components: norms, rotary embeddings, attention, feed-forward and the decoder."""

from tinyseek.model.cache import KVCache, ModelCache
from tinyseek.model.transformer import Transformer

__all__ = ["KVCache", "ModelCache", "Transformer"]
