"""DPO soups (PAPER.md 5.4): single-objective DPO models averaged in parameter space.

    python -m mtalign_jax.soup --models workdirs/dpo_acc,workdirs/dpo_eng --weights 0.5,0.5 \
        --out workdirs/soup_55

theta = sum_i w_i theta_i with w normalised to sum 1 (accumulated in float64, cast back to each
leaf's dtype; zero-weight models add nothing, so weights (1, 0) give the first model bit for bit).
All models must share the architecture (model config, head count, parameter tree and shapes),
else a clear error names the first difference. The soup is written as a workdir
(`OUT/model/{params.safetensors, meta.json}` plus `OUT/soup.json`), loadable by
`load_pretrained(OUT)`, `decode --model OUT` and `sweep --baselines soup:OUT`.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Sequence

import numpy as np


def _flat(tree, prefix=""):
    out = {}
    for k, v in tree.items():
        out.update(_flat(v, f"{prefix}{k}/") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def average_params(trees: Sequence[dict], weights: Sequence[float], names=None) -> dict:
    """sum_i w_i trees[i] (w normalised to sum 1); nested dicts of arrays with equal structure.

    Raises ValueError naming the model and parameter path of the first mismatch.
    """
    names = list(names or [f"model {i}" for i in range(len(trees))])
    w = np.asarray(weights, np.float64)
    if len(trees) < 1 or w.shape != (len(trees),):
        raise ValueError(f"soup: {len(trees)} models but {w.size} weights")
    if not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"soup: weights {w.tolist()} must be finite, >= 0, with a positive sum")
    w = w / w.sum()
    flats = [_flat(t) for t in trees]
    keys = set(flats[0])
    for name, f in zip(names[1:], flats[1:]):
        if set(f) != keys:
            extra, missing = sorted(set(f) - keys), sorted(keys - set(f))
            raise ValueError(f"soup: {name} has a different parameter tree than {names[0]} "
                             f"(extra: {extra[:3]}, missing: {missing[:3]})")
        for k in sorted(keys):
            a, b = np.shape(flats[0][k]), np.shape(f[k])
            if a != b:
                raise ValueError(f"soup: parameter {k} has shape {b} in {name} but {a} in "
                                 f"{names[0]}: the models must share one architecture")
    out = {}
    for k in flats[0]:
        dtype = np.asarray(flats[0][k]).dtype
        acc = None
        for wi, f in zip(w, flats):
            if wi == 0:
                continue
            term = wi * np.asarray(f[k], np.float64)
            acc = term if acc is None else acc + term
        out[k] = acc.astype(dtype)
    tree: dict = {}
    for k, v in out.items():
        node = tree
        *parents, leaf = k.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return tree


def make_soup(models: Sequence[str], weights: Sequence[float], out: str) -> str:
    """Average the saved models of workdirs `models` into workdir `out`; returns out/model."""
    from mtalign_jax.checkpoint import load_params, save_params
    from mtalign_jax.hf.load import _workdir_model  # noqa: SLF001

    if len(models) != len(weights):
        raise ValueError(f"soup: {len(models)} models but {len(weights)} weights")
    trees, metas = [], []
    for m in models:
        d = _workdir_model(m) if os.path.isdir(m) else None
        if d is None:
            raise FileNotFoundError(f"soup: {m} is not a finished workdir of ours "
                                    f"(no {m}/model/meta.json)")
        p, meta = load_params(d)
        trees.append(p)
        metas.append(meta)
    for m, meta in zip(models[1:], metas[1:]):
        for key in ("model_config", "num_heads"):
            if meta.get(key) != metas[0].get(key):
                raise ValueError(f"soup: {m} has {key}={meta.get(key)} but {models[0]} has "
                                 f"{metas[0].get(key)}: the models must share one architecture")
    params = average_params(trees, weights, names=list(models))
    w = np.asarray(weights, np.float64)
    info = {"models": [os.path.abspath(m) for m in models], "weights": (w / w.sum()).tolist()}
    meta = dict(metas[0], soup=info)
    model_dir = os.path.join(out, "model")
    save_params(model_dir, params, meta)
    with open(os.path.join(out, "soup.json"), "w") as f:
        json.dump(info, f, indent=2)
    return model_dir


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m mtalign_jax.soup", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", required=True, help="comma-separated workdirs W1,W2,...")
    ap.add_argument("--weights", required=True, help="comma-separated weights, e.g. 0.5,0.5")
    ap.add_argument("--out", required=True, help="output workdir")
    a = ap.parse_args(argv)
    models = [m.strip() for m in a.models.split(",") if m.strip()]
    try:
        weights = [float(x) for x in a.weights.split(",")]
    except ValueError:
        ap.error(f"--weights {a.weights!r}: expected comma-separated numbers")
    path = make_soup(models, weights, a.out)
    print(f"wrote {path} ({len(models)} models, weights {weights})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
