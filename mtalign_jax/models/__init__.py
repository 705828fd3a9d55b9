"""Linen models: trunk, multi-action heads, KV cache, presets."""
from mtalign_jax.models.heads import MLPHead, MultiActionHeads, ScalarHead  # noqa: F401
from mtalign_jax.models.kv_cache import KVCache, gather, init_cache, repeat  # noqa: F401
from mtalign_jax.models.model import CausalLM, init_params  # noqa: F401
from mtalign_jax.models.presets import PRESETS, ModelConfig, get_preset  # noqa: F401
