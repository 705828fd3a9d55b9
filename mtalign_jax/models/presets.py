"""Model presets: the only place model shapes live.

`get_preset(name)` returns a `ModelConfig`. `tiny` runs in milliseconds on CPU and reads real text
through the byte-level tokenizer; `smollm2-135m-instruct` is the real offline model; the Qwen2.5 and
Llama-3.1 presets are the paper-scale shapes (weights come from the user's HF directories).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Decoder-only transformer shape (Llama / Qwen2 families).

    Attributes mirror the HF config names; `head_dim * n_heads` need not equal `d_model`.
    `rope_scaling` is None or a dict in the HF `llama3` form
    (`factor, low_freq_factor, high_freq_factor, original_max_position_embeddings`).
    """

    name: str
    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_ff: int
    rms_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: Optional[dict[str, Any]] = None
    qkv_bias: bool = False
    tie_embeddings: bool = True
    max_seq_len: int = 2048
    arch: str = "llama"  # "llama" | "qwen2"
    dtype: str = "float32"  # activation / compute dtype
    param_dtype: str = "float32"
    remat: bool = False
    unrolled: bool = False  # layers as L separate blocks, not one scan (models/unrolled.py)
    tokenizer: str = "gguf"  # "bytes" for the tiny preset, "gguf" or "hf" otherwise

    def replace(self, **kw) -> "ModelConfig":
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in fields})

    def num_params(self, num_heads: int = 1) -> int:
        """Parameter count of the trunk plus `num_heads` untied action heads."""
        d, f, l = self.d_model, self.d_ff, self.n_layers
        q = d * self.n_heads * self.head_dim
        kv = 2 * d * self.n_kv_heads * self.head_dim
        o = self.n_heads * self.head_dim * d
        bias = (self.n_heads + 2 * self.n_kv_heads) * self.head_dim if self.qkv_bias else 0
        per_layer = q + kv + o + bias + 3 * d * f + 2 * d
        return self.vocab_size * d + l * per_layer + d + num_heads * d * self.vocab_size


PRESETS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(
        name="tiny", vocab_size=260, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
        head_dim=8, d_ff=64, rms_eps=1e-5, rope_theta=10000.0, max_seq_len=1024,
        tokenizer="bytes",
    ),
    "smollm2-135m-instruct": ModelConfig(
        name="smollm2-135m-instruct", vocab_size=49152, d_model=576, n_layers=30, n_heads=9,
        n_kv_heads=3, head_dim=64, d_ff=1536, rms_eps=1e-5, rope_theta=100000.0,
        max_seq_len=8192, tokenizer="gguf",
    ),
    "qwen2.5-0.5b-instruct": ModelConfig(
        name="qwen2.5-0.5b-instruct", vocab_size=151936, d_model=896, n_layers=24, n_heads=14,
        n_kv_heads=2, head_dim=64, d_ff=4864, rms_eps=1e-6, rope_theta=1000000.0, qkv_bias=True,
        tie_embeddings=True, max_seq_len=32768, arch="qwen2", tokenizer="hf",
    ),
    "qwen2.5-1.5b-instruct": ModelConfig(
        name="qwen2.5-1.5b-instruct", vocab_size=151936, d_model=1536, n_layers=28, n_heads=12,
        n_kv_heads=2, head_dim=128, d_ff=8960, rms_eps=1e-6, rope_theta=1000000.0,
        qkv_bias=True, tie_embeddings=True, max_seq_len=32768, arch="qwen2", tokenizer="hf",
    ),
    "qwen2.5-7b-instruct": ModelConfig(
        name="qwen2.5-7b-instruct", vocab_size=152064, d_model=3584, n_layers=28, n_heads=28,
        n_kv_heads=4, head_dim=128, d_ff=18944, rms_eps=1e-6, rope_theta=1000000.0,
        qkv_bias=True, tie_embeddings=False, max_seq_len=32768, arch="qwen2", tokenizer="hf",
    ),
    "llama-3.1-8b-instruct": ModelConfig(
        name="llama-3.1-8b-instruct", vocab_size=128256, d_model=4096, n_layers=32, n_heads=32,
        n_kv_heads=8, head_dim=128, d_ff=14336, rms_eps=1e-5, rope_theta=500000.0,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
        tie_embeddings=False, max_seq_len=131072, tokenizer="hf",
    ),
}


def get_preset(name: str, **overrides) -> ModelConfig:
    """The named preset, with dataclass field overrides (e.g. `dtype="bfloat16"`)."""
    key = name.lower()
    if key not in PRESETS:
        raise KeyError(f"unknown model preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[key].replace(**overrides) if overrides else PRESETS[key]
