"""HF (Llama / Qwen2) tensor names <-> our parameter tree.

`hf_to_params` stacks per-layer HF weights ([out, in]) into our scanned, transposed kernels and
checks the key set strictly: a missing, unexpected or mis-shaped tensor is an error naming it
(the official code's silent non-strict load is the pitfall this avoids).
"""
from __future__ import annotations

import numpy as np

from mtalign_jax.models.presets import ModelConfig

# (our path under trunk/layers, HF suffix under model.layers.{i}, transpose?)
LAYER_KEYS = [
    ("attn_norm/scale", "input_layernorm.weight", False),
    ("attn/q_proj/kernel", "self_attn.q_proj.weight", True),
    ("attn/k_proj/kernel", "self_attn.k_proj.weight", True),
    ("attn/v_proj/kernel", "self_attn.v_proj.weight", True),
    ("attn/o_proj/kernel", "self_attn.o_proj.weight", True),
    ("mlp_norm/scale", "post_attention_layernorm.weight", False),
    ("mlp/gate_proj/kernel", "mlp.gate_proj.weight", True),
    ("mlp/up_proj/kernel", "mlp.up_proj.weight", True),
    ("mlp/down_proj/kernel", "mlp.down_proj.weight", True),
]
BIAS_KEYS = [
    ("attn/q_proj/bias", "self_attn.q_proj.bias"),
    ("attn/k_proj/bias", "self_attn.k_proj.bias"),
    ("attn/v_proj/bias", "self_attn.v_proj.bias"),
]


def expected_hf_shapes(cfg: ModelConfig) -> dict[str, tuple]:
    """Every HF tensor name of the base model with its [out, in] shape."""
    d, hd, f = cfg.d_model, cfg.head_dim, cfg.d_ff
    q, kv = cfg.n_heads * hd, cfg.n_kv_heads * hd
    per = {
        "input_layernorm.weight": (d,),
        "self_attn.q_proj.weight": (q, d),
        "self_attn.k_proj.weight": (kv, d),
        "self_attn.v_proj.weight": (kv, d),
        "self_attn.o_proj.weight": (d, q),
        "post_attention_layernorm.weight": (d,),
        "mlp.gate_proj.weight": (f, d),
        "mlp.up_proj.weight": (f, d),
        "mlp.down_proj.weight": (d, f),
    }
    if cfg.qkv_bias:
        per.update({"self_attn.q_proj.bias": (q,), "self_attn.k_proj.bias": (kv,),
                    "self_attn.v_proj.bias": (kv,)})
    out = {"model.embed_tokens.weight": (cfg.vocab_size, d), "model.norm.weight": (d,)}
    for i in range(cfg.n_layers):
        out.update({f"model.layers.{i}.{k}": s for k, s in per.items()})
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = (cfg.vocab_size, d)
    return out


def check_keys(tensors: dict, expected: dict[str, tuple], source: str, extra_ok=()) -> None:
    """Raise a ValueError naming every missing, unexpected or mis-shaped tensor."""
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(k for k in set(tensors) - set(expected) if k not in extra_ok)
    bad = sorted(f"{k}: got {tuple(tensors[k].shape)}, expected {expected[k]}"
                 for k in set(expected) & set(tensors) if tuple(tensors[k].shape) != expected[k])
    if missing or unexpected or bad:
        lines = [f"{source}: checkpoint does not match the model"]
        if missing:
            lines.append(f"missing tensors ({len(missing)}): {', '.join(missing[:20])}")
        if unexpected:
            lines.append(f"unexpected tensors ({len(unexpected)}): {', '.join(unexpected[:20])}")
        if bad:
            lines.append(f"mis-shaped tensors ({len(bad)}): {'; '.join(bad[:20])}")
        raise ValueError("\n".join(lines))


def _set(tree: dict, path: str, value) -> None:
    node = tree
    parts = path.split("/")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value


def hf_to_trunk(cfg: ModelConfig, tensors: dict[str, np.ndarray], dtype=np.float32) -> dict:
    """Our `trunk` subtree (numpy) from HF-named tensors (keys must already be checked)."""
    trunk: dict = {}
    _set(trunk, "embed/embedding", tensors["model.embed_tokens.weight"].astype(dtype))
    _set(trunk, "final_norm/scale", tensors["model.norm.weight"].astype(dtype))
    keys = LAYER_KEYS + ([(p, k, False) for p, k in BIAS_KEYS] if cfg.qkv_bias else [])
    for ours, hf, transpose in keys:
        rows = [tensors[f"model.layers.{i}.{hf}"] for i in range(cfg.n_layers)]
        stacked = np.stack([r.T if transpose else r for r in rows]).astype(dtype)
        _set(trunk, f"layers/{ours}", stacked)
    return trunk


def base_lm_head(cfg: ModelConfig, tensors: dict[str, np.ndarray]) -> np.ndarray:
    """The base LM head as a [D, V] kernel (the tied embedding's transpose when tied)."""
    w = tensors["model.embed_tokens.weight" if cfg.tie_embeddings else "lm_head.weight"]
    return np.ascontiguousarray(w.T)


def trunk_to_hf(cfg: ModelConfig, trunk: dict) -> dict[str, np.ndarray]:
    """Inverse of hf_to_trunk: HF-named [out, in] numpy tensors from our trunk subtree."""
    def get(path):
        node = trunk
        for p in path.split("/"):
            node = node[p]
        return np.asarray(node)

    out = {"model.embed_tokens.weight": get("embed/embedding"),
           "model.norm.weight": get("final_norm/scale")}
    keys = LAYER_KEYS + ([(p, k, False) for p, k in BIAS_KEYS] if cfg.qkv_bias else [])
    for ours, hf, transpose in keys:
        stacked = get(f"layers/{ours}")
        for i in range(cfg.n_layers):
            out[f"model.layers.{i}.{hf}"] = np.ascontiguousarray(
                stacked[i].T if transpose else stacked[i])
    return out
