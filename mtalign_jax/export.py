"""Export a multi-head model's mixed head as a plain one-head HF safetensors directory.

    python -m mtalign_jax.export --model W --head_weights 0.7,0.3 --out DIR

W is anything `load_pretrained` accepts (a preset, a .gguf file, an HF directory, including a
multi-head one in the official `heads.{i}.weight` layout, or one of our workdirs). DIR gets
`config.json` (LlamaForCausalLM or Qwen2ForCausalLM, `tie_word_embeddings: false`) and
`model.safetensors` whose `lm_head.weight` [V, D] is (sum_i w_i W_i).T with w normalised to sum 1,
so its logits equal our mixed-head logits; tokenizer files of the source directory are copied.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil

import numpy as np

from mtalign_jax.hf import mappings
from mtalign_jax.hf import safetensors as st


def parse_weights(text: str) -> np.ndarray:
    """'0.7,0.3' -> normalised float64 weights [K]; negative or all-zero weights are errors."""
    try:
        w = np.array([float(x) for x in text.split(",")], np.float64)
    except ValueError:
        raise ValueError(f"--head_weights {text!r}: expected comma-separated numbers") from None
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"--head_weights {text!r}: weights must be >= 0 with a positive sum")
    return w / w.sum()


def mixed_lm_head(kernel: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """HF `lm_head.weight` [V, D] of the mix: (sum_i w_i W_i).T; kernel [K, D, V], w [K]."""
    kernel = np.asarray(kernel, np.float32)
    if kernel.shape[0] != len(weights):
        raise ValueError(f"--head_weights has {len(weights)} weights but the model has "
                         f"{kernel.shape[0]} heads")
    w = np.asarray(weights, np.float32) / np.float32(np.sum(weights))
    return np.ascontiguousarray(np.einsum("k,kdv->vd", w, kernel))


def tokenizer_dir(src: str) -> str | None:
    """The directory whose tokenizer files belong with `src` (itself, or a workdir's base
    model), or None (presets and .gguf files carry their tokenizer elsewhere)."""
    from mtalign_jax.hf.load import _workdir_model

    if not os.path.isdir(src):
        return None
    wd = _workdir_model(src)
    if wd is not None:
        with open(os.path.join(wd, "meta.json")) as f:
            return tokenizer_dir(str(json.load(f).get("base_model", "")))
    return src if os.path.isfile(os.path.join(src, "tokenizer.json")) else None


def write_tokenizer(tok, out: str) -> bool:
    """tokenizer.json + tokenizer_config.json of an `HFTokenizer` (e.g. one read from GGUF
    metadata); False for tokenizers with no HF form (the tiny preset's `ByteTokenizer`)."""
    from mtalign_jax.data.tokenizer import HFTokenizer

    if not isinstance(tok, HFTokenizer):
        return False
    tok.tok.save(os.path.join(out, "tokenizer.json"))
    name = tok.tok.id_to_token
    config = {"eos_token": name(tok.eos_id), "pad_token": name(tok.pad_id),
              "bos_token": None if tok.bos_id is None else name(tok.bos_id),
              "chat_template": tok.chat_template}
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump({k: v for k, v in config.items() if v is not None}, f, indent=2)
    return True


def export(model, params, weights, out: str, *, dtype: str = "float32",
           source: str | None = None, tokenizer=None) -> dict:
    """Write the mixed head of (model, params) as an HF directory at `out`; returns config.

    Tokenizer files are copied from the source's directory when it has them, else written from
    `tokenizer` when it is an `HFTokenizer`."""
    cfg = model.cfg
    tensors = mappings.trunk_to_hf(cfg, _to_numpy(params["trunk"]))
    tensors["lm_head.weight"] = mixed_lm_head(_to_numpy(params["heads"]["kernel"]), weights)
    np_dtype = st._np_dtype(dtype)
    tensors = {k: v.astype(np_dtype) for k, v in tensors.items()}
    ids = {} if tokenizer is None else {
        "eos_token_id": tokenizer.eos_id, "pad_token_id": tokenizer.pad_id,
        "bos_token_id": getattr(tokenizer, "bos_id", None)}
    config = st.hf_config(cfg, tie_embeddings=False, dtype=dtype, **ids)
    config["mtalign_export"] = {"source": source,
                                "head_weights": [float(x) for x in weights]}
    st.write_hf_dir(out, config, tensors)
    tok_src = tokenizer_dir(source) if source else None
    if tok_src is not None:
        for name in st.TOKENIZER_FILES:
            if os.path.isfile(os.path.join(tok_src, name)):
                shutil.copyfile(os.path.join(tok_src, name), os.path.join(out, name))
    elif tokenizer is not None:
        write_tokenizer(tokenizer, out)
    return config


def _to_numpy(tree):
    import jax

    return jax.tree_util.tree_map(lambda x: np.asarray(jax.device_get(x), np.float32), tree)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m mtalign_jax.export", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="preset, .gguf, HF directory or workdir")
    ap.add_argument("--head_weights", required=True, help="comma-separated, one per head")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = ap.parse_args(argv)
    try:
        weights = parse_weights(args.head_weights)
    except ValueError as e:
        ap.error(str(e))

    from mtalign_jax.hf.load import load_pretrained

    model, params, tok = load_pretrained(args.model, num_heads=len(weights))
    export(model, params, weights, args.out, dtype=args.dtype, source=args.model, tokenizer=tok)
    print(f"wrote {args.out}: {st.HF_ARCH[model.cfg.arch]}, mixed head of "
          f"{len(weights)} with weights {', '.join(f'{w:.4g}' for w in weights)}")


if __name__ == "__main__":
    main()
