"""GGUF reader: llama.cpp checkpoints -> HF-named numpy weights and a ModelConfig.

Tensors are dequantized with `gguf.quants.dequantize`. llama.cpp permutes the rows of Q and K for
its interleaved RoPE; `unpermute` restores the HF (rotate-half) order. The tokenizer and chat
template come from the same file's metadata (`mtalign_jax.data.tokenizer.tokenizer_from_gguf`).
"""
from __future__ import annotations

import os

import numpy as np

from mtalign_jax.models.presets import ModelConfig

# GGUF tensor names -> HF names; `{i}` is the layer index.
_LAYER = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_GLOBAL = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}


def unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation. w: [out, in] (or [out] for a bias)."""
    out = w.shape[0]
    rest = w.shape[1:]
    return w.reshape(n_head, out // n_head // 2, 2, *rest).swapaxes(1, 2).reshape(out, *rest)


def _field(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    return f.contents()


def read_gguf(path: str, name: str | None = None) -> tuple[ModelConfig, dict[str, np.ndarray]]:
    """(config, {hf_name: float32 array [out, in]}) from a llama/qwen2 GGUF file."""
    import gguf

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: GGUF file not found")
    reader = gguf.GGUFReader(path)
    arch = _field(reader, "general.architecture")
    if arch not in ("llama", "qwen2"):
        raise ValueError(f"{path}: unsupported GGUF architecture {arch!r} (llama, qwen2)")
    g = lambda k, d=None: _field(reader, f"{arch}.{k}", d)  # noqa: E731
    n_head, n_kv = int(g("attention.head_count")), int(g("attention.head_count_kv"))
    d_model = int(g("embedding_length"))
    tensors: dict[str, np.ndarray] = {}
    for t in reader.tensors:
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        if t.name in _GLOBAL:
            tensors[_GLOBAL[t.name]] = w
            continue
        parts = t.name.split(".")  # blk.{i}.{kind}.{weight|bias}
        if parts[0] != "blk" or parts[2] not in _LAYER:
            raise ValueError(f"{path}: unexpected GGUF tensor {t.name!r}")
        if parts[2] == "attn_q":
            w = unpermute(w, n_head)
        elif parts[2] == "attn_k":
            w = unpermute(w, n_kv)
        tensors[f"model.layers.{parts[1]}.{_LAYER[parts[2]]}.{parts[3]}"] = w
    vocab = tensors["model.embed_tokens.weight"].shape[0]
    cfg = ModelConfig(
        name=name or os.path.basename(path),
        vocab_size=vocab,
        d_model=d_model,
        n_layers=int(g("block_count")),
        n_heads=n_head,
        n_kv_heads=n_kv,
        head_dim=int(g("rope.dimension_count", d_model // n_head)),
        d_ff=int(g("feed_forward_length")),
        rms_eps=float(g("attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta=float(g("rope.freq_base", 10000.0)),
        qkv_bias=any(k.endswith("q_proj.bias") for k in tensors),
        tie_embeddings="lm_head.weight" not in tensors,
        max_seq_len=int(g("context_length", 2048)),
        arch=arch,
        tokenizer="gguf",
    )
    return cfg, tensors
