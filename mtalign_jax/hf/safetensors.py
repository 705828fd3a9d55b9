"""HF safetensors directories (Llama / Qwen2 families) -> our `CausalLM`, and back.

A directory holds `config.json` and one or more `*.safetensors` shards (listed by
`model.safetensors.index.json` when sharded). Tensors are read with
`safe_open(framework="numpy")`; bfloat16 tensors come back as `ml_dtypes.bfloat16` arrays.

Layouts, detected from `config.json["architectures"]` and the tensor names:
- `causal`:   `LlamaForCausalLM` / `Qwen2ForCausalLM` (tied or untied `lm_head`);
- `multihead`: a causal config whose checkpoint holds `heads.{i}.weight` [V, D] beside the
  `model.*` keys and no `lm_head` (the official PyTorch MAH-DPO layout) -> heads kernel [K, D, V];
- `seqcls`:   `*ForSequenceClassification`, `score.weight` [num_labels, D] ->
  `{"score": {"kernel": [D, num_labels]}}` for `ScalarHead(out=num_labels, bias=False)`;
- `prm`:      `Qwen2ForProcessRewardModel`, `score.0.{weight,bias}` [D, D] and
  `score.2.{weight,bias}` [n, D] -> `{"fc1": ..., "fc2": ...}` for `MLPHead(out=n)`.

Every key set is checked strictly (`mappings.check_keys`): a missing, unexpected or mis-shaped
tensor is an error that names it and the directory. A directory without `tokenizer.json` loads
with `tokenizer=None`.
"""
from __future__ import annotations

import glob
import json
import os
import re

import numpy as np

from mtalign_jax.hf import mappings
from mtalign_jax.models.presets import ModelConfig

# architecture -> (our arch, layout)
ARCHITECTURES = {
    "LlamaForCausalLM": ("llama", "causal"),
    "Qwen2ForCausalLM": ("qwen2", "causal"),
    "LlamaForSequenceClassification": ("llama", "seqcls"),
    "Qwen2ForSequenceClassification": ("qwen2", "seqcls"),
    "Qwen2ForProcessRewardModel": ("qwen2", "prm"),
}
HF_ARCH = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.json", "merges.txt", "tokenizer.model", "generation_config.json")
_HEAD_KEY = re.compile(r"^heads\.(\d+)\.weight$")


# ----------------------------------------------------------------------------- reading

def read_config_json(path: str) -> dict:
    """The parsed `config.json` of an HF directory (errors name the file)."""
    cfg_path = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_path):
        raise FileNotFoundError(f"{cfg_path}: missing (not an HF model directory)")
    with open(cfg_path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{cfg_path}: line {e.lineno}: invalid JSON ({e.msg})") from e


def shard_files(path: str) -> list[str]:
    """The safetensors shards of a directory: from the index file if any, else `*.safetensors`."""
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index) as f:
            weight_map = json.load(f).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ValueError(f"{index}: field 'weight_map' missing or not an object")
        files = [os.path.join(path, n) for n in sorted(set(weight_map.values()))]
        for fn in files:
            if not os.path.isfile(fn):
                raise FileNotFoundError(f"{fn}: shard listed in {index} is missing")
        return files
    files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
    if not files:
        raise FileNotFoundError(f"{path}: no *.safetensors files")
    return files


def read_tensors(path: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """All tensors of a directory's shards: ({name: array}, {name: shard file}).

    Arrays keep their stored dtype (bfloat16 as `ml_dtypes.bfloat16`). A name stored in two
    shards is an error naming both files.
    """
    from safetensors import safe_open

    tensors: dict[str, np.ndarray] = {}
    where: dict[str, str] = {}
    for fn in shard_files(path):
        with safe_open(fn, framework="numpy") as f:
            for name in f.keys():
                if name in tensors:
                    raise ValueError(f"{fn}: tensor {name!r} also stored in {where[name]}")
                tensors[name] = f.get_tensor(name)
                where[name] = fn
    return tensors, where


def _rope(hf: dict, cfg_path: str) -> tuple[float, dict | None]:
    """(rope_theta, rope_scaling) from transformers-5 `rope_parameters` or v4 fields."""
    rp = hf.get("rope_parameters") or {}
    theta = float(rp.get("rope_theta", hf.get("rope_theta", 10000.0)))
    sc = hf.get("rope_scaling") or {k: v for k, v in rp.items() if k != "rope_theta"}
    kind = sc.get("rope_type", sc.get("type", "default")) if sc else "default"
    if kind == "default":
        return theta, None
    if kind == "llama3":
        keys = ("factor", "low_freq_factor", "high_freq_factor",
                "original_max_position_embeddings")
        missing = [k for k in keys if k not in sc]
        if missing:
            raise ValueError(f"{cfg_path}: llama3 rope scaling lacks {', '.join(missing)}")
        return theta, {"rope_type": "llama3", **{k: sc[k] for k in keys}}
    raise ValueError(f"{cfg_path}: field 'rope_scaling': rope type {kind!r} is not supported "
                     "(default, llama3)")


def model_config_from_hf(hf: dict, path: str) -> tuple[ModelConfig, str]:
    """(ModelConfig, layout) from a parsed config.json; unsupported models are a clear error."""
    cfg_path = os.path.join(path, "config.json")
    archs = hf.get("architectures") or []
    known = [a for a in archs if a in ARCHITECTURES]
    if not known:
        raise ValueError(
            f"{cfg_path}: field 'architectures': unsupported architecture {archs!r} "
            f"(model_type {hf.get('model_type')!r}); supported: {', '.join(ARCHITECTURES)}")
    arch, layout = ARCHITECTURES[known[0]]

    def need(key):
        if key not in hf:
            raise ValueError(f"{cfg_path}: required field {key!r} is missing")
        return hf[key]

    if hf.get("hidden_act", "silu") != "silu":
        raise ValueError(f"{cfg_path}: field 'hidden_act': {hf['hidden_act']!r} unsupported "
                         "(silu)")
    if arch == "llama" and (hf.get("attention_bias") or hf.get("mlp_bias")):
        raise ValueError(f"{cfg_path}: fields 'attention_bias'/'mlp_bias': Llama projection "
                         "biases are not supported")
    if arch == "qwen2" and (hf.get("use_sliding_window")
                            or "sliding_attention" in (hf.get("layer_types") or [])):
        raise ValueError(f"{cfg_path}: field 'use_sliding_window': sliding-window attention "
                         "is not supported")
    d, n_heads = int(need("hidden_size")), int(need("num_attention_heads"))
    theta, scaling = _rope(hf, cfg_path)
    cfg = ModelConfig(
        name=os.path.basename(os.path.normpath(path)),
        vocab_size=int(need("vocab_size")),
        d_model=d,
        n_layers=int(need("num_hidden_layers")),
        n_heads=n_heads,
        n_kv_heads=int(hf.get("num_key_value_heads") or n_heads),
        head_dim=int(hf.get("head_dim") or d // n_heads),
        d_ff=int(need("intermediate_size")),
        rms_eps=float(hf.get("rms_norm_eps", 1e-6)),
        rope_theta=theta,
        rope_scaling=scaling,
        qkv_bias=arch == "qwen2",  # Qwen2's q/k/v projections always carry a bias
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        max_seq_len=int(hf.get("max_position_embeddings", 2048)),
        arch=arch,
        tokenizer="hf",
    )
    return cfg, layout


def _num_labels(hf: dict, tensors: dict, key: str) -> int:
    if hf.get("id2label"):
        return len(hf["id2label"])
    if hf.get("num_labels"):
        return int(hf["num_labels"])
    return int(tensors[key].shape[0]) if key in tensors else 2


def read_hf_dir(path: str) -> tuple[ModelConfig, dict[str, np.ndarray], dict]:
    """(config, {hf_name: array}, extras) of an HF directory, keys checked strictly.

    extras: `layout` ("causal" | "multihead" | "seqcls" | "prm"), `architecture`,
    `num_heads` (multihead), `num_labels` (seqcls/prm), `pad_token_id`, `eos_token_id`.
    For `seqcls`/`prm` the config is marked tied (the LM head is the embedding; unused).
    """
    path = os.path.normpath(path)
    hf = read_config_json(path)
    cfg, layout = model_config_from_hf(hf, path)
    tensors, where = read_tensors(path)
    extras = {"architecture": next(a for a in hf["architectures"] if a in ARCHITECTURES),
              "pad_token_id": hf.get("pad_token_id"), "eos_token_id": hf.get("eos_token_id")}
    d = cfg.d_model
    head_ids = sorted(int(m.group(1)) for m in map(_HEAD_KEY.match, tensors) if m)
    if layout == "causal" and head_ids:
        layout = "multihead"
        if head_ids != list(range(len(head_ids))):
            raise ValueError(f"{path}: multi-head checkpoint has heads {head_ids}; "
                             f"expected heads.0 .. heads.{len(head_ids) - 1}")
        extras["num_heads"] = len(head_ids)
    extra_shapes: dict[str, tuple] = {}
    if layout == "multihead":
        cfg = cfg.replace(tie_embeddings=True)  # no lm_head: the heads replace it
        extra_shapes = {f"heads.{i}.weight": (cfg.vocab_size, d) for i in head_ids}
    elif layout == "seqcls":
        cfg = cfg.replace(tie_embeddings=True)
        n = _num_labels(hf, tensors, "score.weight")
        extra_shapes = {"score.weight": (n, d)}
        extras["num_labels"] = n
    elif layout == "prm":
        cfg = cfg.replace(tie_embeddings=True)
        n = int(tensors["score.2.weight"].shape[0]) if "score.2.weight" in tensors else 2
        extra_shapes = {"score.0.weight": (d, d), "score.0.bias": (d,),
                        "score.2.weight": (n, d), "score.2.bias": (n,)}
        extras["num_labels"] = n
    extras["layout"] = layout
    expected = {**mappings.expected_hf_shapes(cfg), **extra_shapes}
    try:
        mappings.check_keys(tensors, expected, path)
    except ValueError as e:  # name the shard of every offending tensor that exists
        bad = sorted(k for k in tensors if k not in expected
                     or tuple(tensors[k].shape) != expected[k])
        files = "; ".join(f"{k} in {os.path.basename(where[k])}" for k in bad[:20])
        raise ValueError(f"{e}\nfiles: {files}" if files else str(e)) from None
    return cfg, tensors, extras


# ----------------------------------------------------------------------------- placing

def _place(tree, dtype, shardings=None):
    """numpy tree -> jax arrays in `dtype`; with `shardings` (same structure) each leaf goes
    straight into its sharding, never materialised replicated on one device."""
    import jax
    import jax.numpy as jnp

    dt = jnp.dtype(dtype)
    if shardings is None:
        return jax.tree_util.tree_map(
            lambda x: jnp.asarray(np.asarray(x).astype(dt, copy=False)), tree)
    return jax.tree_util.tree_map(
        lambda x, s: jax.device_put(np.asarray(x).astype(dt, copy=False), s), tree, shardings)


def _np_dtype(dtype: str) -> np.dtype:
    """numpy dtype of a name, bfloat16 included (ml_dtypes)."""
    import jax.numpy as jnp

    return np.dtype(jnp.dtype(dtype))


def _tokenizer(path: str):
    """The directory's tokenizer (via `tokenizer.json`), or None when it has none."""
    tj = os.path.join(path, "tokenizer.json")
    if not os.path.isfile(tj):
        return None
    from mtalign_jax.data.tokenizer import tokenizer_from_json

    return tokenizer_from_json(tj)


def _heads_from_base(base: np.ndarray, num_heads: int, noise: float, seed: int, dtype,
                     sharding=None):
    """[K, D, V] heads: base [D, V] + noise * N(0, 1), key fold_in(PRNGKey(seed), i)."""
    import jax
    import jax.numpy as jnp

    from mtalign_jax.models.heads import perturbed_heads

    dt = jnp.dtype(dtype)
    fn = lambda b: perturbed_heads(b, num_heads, noise, seed).astype(dt)  # noqa: E731
    if sharding is None:
        return fn(jnp.asarray(base, jnp.float32))
    return jax.jit(fn, out_shardings=sharding)(base.astype(np.float32))


def load_dir(path: str, *, num_heads=1, head_init_noise: float = 0.0, seed: int = 0,
             dtype: str = "float32", shardings=None):
    """(CausalLM, params, tokenizer or None) from an HF directory.

    Causal checkpoints: every one of `num_heads` heads starts from the base LM head (the tied
    embedding when tied) plus `head_init_noise * N(0, 1)` (per-head key fold_in(seed, i)).
    Multi-head checkpoints (official layout) bring their own K heads: `num_heads` must be K or
    None. Reward-model layouts are rejected here (use `load_reward_model`).
    `shardings`: optional pytree matching `params` of `jax.sharding.Sharding`s.
    """
    from mtalign_jax.models.model import CausalLM

    cfg, tensors, extras = read_hf_dir(path)
    layout = extras["layout"]
    if layout in ("seqcls", "prm"):
        raise ValueError(f"{path}: {extras['architecture']} is a reward model; load it with "
                         "mtalign_jax.hf.safetensors.load_reward_model")
    cfg = cfg.replace(dtype=dtype, param_dtype=dtype)
    trunk = mappings.hf_to_trunk(cfg, tensors, dtype=_np_dtype(dtype))
    sh_trunk = None if shardings is None else shardings["trunk"]
    sh_heads = None if shardings is None else shardings["heads"]["kernel"]
    if layout == "multihead":
        k = extras["num_heads"]
        if num_heads is not None and num_heads != k:
            raise ValueError(f"{path}: checkpoint has {k} heads (heads.0 .. heads.{k - 1}); "
                             f"num_heads={num_heads} was asked (pass num_heads={k} or None)")
        kernel = np.stack([tensors[f"heads.{i}.weight"].T for i in range(k)])
        heads = {"kernel": kernel}
        heads = _place(heads, dtype, None if sh_heads is None else {"kernel": sh_heads})
    else:
        k = 1 if num_heads is None else int(num_heads)
        heads = {"kernel": _heads_from_base(mappings.base_lm_head(cfg, tensors), k,
                                            head_init_noise, seed, dtype, sh_heads)}
    params = {"trunk": _place(trunk, dtype, sh_trunk), "heads": heads}
    return CausalLM(cfg, k), params, _tokenizer(path)


def load_reward_model(path: str, dtype: str = "float32"):
    """(CausalLM, params, head_module, head_params, tokenizer or None, kind) of a
    sequence-classification (`kind="seqcls"`) or Qwen2.5-Math-PRM (`kind="prm"`) directory.

    The trunk's final hidden states h [B, T, D] feed `head_module.apply({"params":
    head_params}, h)`: seqcls -> `ScalarHead(out=num_labels, bias=False)`, to be read at the last
    non-pad token; prm -> `MLPHead(out=n)` (per-token class logits [B, T, n]).
    The LM head in `params` is the tied embedding (unused by reward models).
    """
    from mtalign_jax.models.heads import MLPHead, ScalarHead
    from mtalign_jax.models.model import CausalLM

    cfg, tensors, extras = read_hf_dir(path)
    kind = extras["layout"]
    if kind not in ("seqcls", "prm"):
        raise ValueError(f"{path}: {extras['architecture']} ({kind}) is not a reward model "
                         "(*ForSequenceClassification, Qwen2ForProcessRewardModel)")
    cfg = cfg.replace(dtype=dtype, param_dtype=dtype)
    params = {"trunk": _place(mappings.hf_to_trunk(cfg, tensors, dtype=_np_dtype(dtype)), dtype),
              "heads": {"kernel": _place(mappings.base_lm_head(cfg, tensors)[None], dtype)}}
    n = extras["num_labels"]
    if kind == "seqcls":
        head = ScalarHead(out=n, bias=False)
        head_np = {"score": {"kernel": tensors["score.weight"].T}}
    else:
        head = MLPHead(out=n)
        head_np = {"fc1": {"kernel": tensors["score.0.weight"].T, "bias": tensors["score.0.bias"]},
                   "fc2": {"kernel": tensors["score.2.weight"].T, "bias": tensors["score.2.bias"]}}
    head_params = _place(head_np, "float32")  # heads compute in float32
    return CausalLM(cfg, 1), params, head, head_params, _tokenizer(path), kind


# ----------------------------------------------------------------------------- writing

def hf_config(cfg: ModelConfig, *, tie_embeddings: bool = False, dtype: str = "float32",
              **extra) -> dict:
    """A `config.json` dict (LlamaForCausalLM / Qwen2ForCausalLM) describing `cfg`."""
    if cfg.arch not in HF_ARCH:
        raise ValueError(f"arch {cfg.arch!r} has no HF causal-LM class ({', '.join(HF_ARCH)})")
    if cfg.arch == "llama" and cfg.qkv_bias:
        raise ValueError("a Llama model with q/k/v biases has no HF Llama equivalent "
                         "(attention_bias also adds an o_proj bias)")
    rope = {"rope_type": "default", "rope_theta": cfg.rope_theta}
    if cfg.rope_scaling:
        rope = {**cfg.rope_scaling, "rope_type": "llama3", "rope_theta": cfg.rope_theta}
    out = {
        "architectures": [HF_ARCH[cfg.arch]],
        "model_type": cfg.arch,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.d_ff,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": cfg.rms_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": None if rope["rope_type"] == "default" else rope,
        "rope_parameters": rope,
        "max_position_embeddings": cfg.max_seq_len,
        "tie_word_embeddings": tie_embeddings,
        "torch_dtype": dtype,
        "dtype": dtype,
    }
    if cfg.arch == "llama":
        out.update(attention_bias=False, mlp_bias=False)
    else:
        out.update(use_sliding_window=False, sliding_window=None)
    out.update({k: v for k, v in extra.items() if v is not None})
    return out


def write_hf_dir(out: str, config: dict, tensors: dict[str, np.ndarray]) -> None:
    """Write `config.json` and one `model.safetensors` (format "pt", loadable by transformers)."""
    from safetensors.numpy import save_file

    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()},
              os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
