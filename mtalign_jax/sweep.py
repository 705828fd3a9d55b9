"""Head-weight sweep (PAPER.md 3.4 / 6.1): score the eval pairs, optionally decode the eval
prompts, at every head-weight vector of a grid; write per-weight objective scores and a Pareto plot.

    python -m mtalign_jax.sweep --model workdirs/mahdpo_math --out workdirs/sweep \
        [--data accuracy:EVAL1.jsonl,engagement:EVAL2.jsonl] [--grid 11] \
        [--generate 8 --max_new_tokens 64] [--judges engagement:workdirs/rm_engagement] \
        [--baselines dpo_mixed:workdirs/dpo_mixed,soup:workdirs/soup_55]

Grid: `--grid G` points per simplex edge: G points (1,0)...(0,1) for 2 heads, the simplex lattice
(weights in multiples of 1/(G-1), summing to 1; 66 points for G=11) for 3. The mixed head is
sum_i w_i W_i (logits of one projection; the trunk runs once per batch for all weights).

Objective score of a weight w on objective o = the implicit-reward preference accuracy of the
mixed head on o's pairs vs the reference model: the fraction of pairs with
(log pi_w(chosen) - log pi_ref(chosen)) > (log pi_w(rejected) - log pi_ref(rejected)); the mean
implicit margin beta * (...) is reported too. Data: `--data` files (every row), else the eval
split of the run's own config (W/config.json; same seed). Reference: `--reference`, else the
run's `model.reference` or base model. With `--generate N`, the first N eval prompts are decoded
greedily at every w (mtalign_jax.decoding.sampling.generate) into generations.jsonl; with
`--judges obj:RM_WORKDIR` each generation is scored by that reward model and the mean lands in
the per-weight scores as `judge/<obj>` (keep judges apart from any guide model).

Outputs in --out: sweep.json (grid, scores, margins, baselines, Pareto front indices and
hypervolume vs the origin), sweep.csv (one row per weight), pareto.png (objectives 1 and 2;
pareto_A_B.png for every pair when there are more), generations.jsonl.
"""
from __future__ import annotations

import csv
import functools
import itertools
import json
import os
import sys
from typing import Optional, Sequence

import jax
import numpy as np


def weight_grid(num_heads: int, points: int = 11) -> np.ndarray:
    """[G, K] head weights on the simplex lattice with `points` per edge (rows sum to 1).

    K = 1: [[1]]. K = 2: (1, 0), (0.9, 0.1), ..., (0, 1). K >= 3: every composition of
    points - 1 into K non-negative parts, divided by points - 1, head 0's weight descending.
    """
    if num_heads < 1 or points < 2:
        raise ValueError(f"weight_grid: need num_heads >= 1 and points >= 2, got {num_heads}, "
                         f"{points}")
    if num_heads == 1:
        return np.ones((1, 1))
    n = points - 1
    rows = [c for c in itertools.product(range(n, -1, -1), repeat=num_heads) if sum(c) == n]
    return np.asarray(rows, np.float64) / n


@functools.partial(jax.jit, static_argnums=(0,))
def mixed_logps(model, params, batch, weights) -> jax.Array:
    """[G, B] summed response log-probs of each row under each mixed head sum_i w_i W_i.

    batch: a prepared batch (`input_ids`, `attention_mask`, `resp_idx`, `resp_labels`);
    weights [G, K]. The trunk runs once; the weights are projected one at a time (lax.map), so
    only [B, R, V] logits exist at once.
    """
    import jax.numpy as jnp

    from mtalign_jax.models.model import CausalLM
    from mtalign_jax.training.steps import gathered_logps

    h, _ = model.apply({"params": params}, batch["input_ids"],
                       attention_mask=batch["attention_mask"], method=CausalLM.hidden)
    hr = jnp.take_along_axis(h, batch["resp_idx"][..., None], axis=1)  # [B, R, D]

    def one(w):
        z = model.apply({"params": params}, hr, head_weights=w, method=CausalLM.project)
        return gathered_logps(z, batch["resp_labels"])

    return jax.lax.map(one, jnp.asarray(weights, jnp.float32))


def score_pairs(model, params, tok, rows: Sequence[dict], weights, *, max_len: int,
                max_prompt_len: int, batch_size: int = 8) -> np.ndarray:
    """[G, N, 2] float32 (chosen, rejected) log-probs of every pair under every weight.

    Pairs are encoded as in training (shared-prompt truncation); one static batch shape for the
    whole pass (the longest sequence's bucket; the last batch padded with copies, dropped).
    """
    from mtalign_jax.data import pipeline
    from mtalign_jax.training import tasks
    from mtalign_jax.training.task_preference import encode_pairs

    seqs = encode_pairs(rows, tok, max_len, max_prompt_len)
    t = pipeline.bucket_for(max((len(ids) for ids, _ in seqs), default=1),
                            pipeline.effective_buckets(pipeline.DEFAULT_BUCKETS, max_len))
    w = np.asarray(weights, np.float32)
    out = []
    for i in range(0, len(seqs), batch_size):
        chunk = seqs[i: i + batch_size]
        real = len(chunk)
        b = pipeline.pad_rows(chunk + [chunk[0]] * (batch_size - real), t, tok.pad_id)
        b["resp_idx"], b["resp_labels"] = tasks.response_view(b["labels"], bucket=t)
        lp = jax.device_get(mixed_logps(model, params, b, w))
        out.append(np.asarray(lp, np.float32)[:, :real])
    flat = np.concatenate(out, axis=1) if out else np.zeros((len(w), 0), np.float32)
    n = len(rows)
    return np.stack([flat[:, :n], flat[:, n:]], axis=-1)


def preference_scores(logps: np.ndarray, ref: np.ndarray, beta: float) -> tuple[np.ndarray,
                                                                                 np.ndarray]:
    """(accuracy [G], mean implicit margin [G]) from logps [G, N, 2] and reference [N, 2]."""
    d = (logps[..., 0] - ref[None, :, 0]) - (logps[..., 1] - ref[None, :, 1])  # [G, N]
    return (d > 0).mean(axis=1), beta * d.mean(axis=1)


# ---------------------------------------------------------------------------------------------


def _run_config(model_path: str):
    path = os.path.join(model_path, "config.json")
    if not os.path.isfile(path):
        return None
    import ml_collections

    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


def load_rows(data_spec: Optional[str], cfg) -> dict[str, list]:
    """{objective: rows}: the named files (validated, every row) or the run's eval split."""
    from mtalign_jax.data import validate

    if data_spec:
        out: dict[str, list] = {}
        for objective, path in validate.parse_files_spec(data_spec):
            if objective is None:
                raise ValueError(f"--data: name the objective of {path}: --data OBJ:{path},...")
            out.setdefault(objective, []).extend(validate.load_preference_file(path, objective))
        return out
    if cfg is None:
        raise ValueError("--data is required when --model is not a training workdir "
                         "(no config.json to take the eval split from)")
    from mtalign_jax.training.task_preference import load_preference_data

    data = load_preference_data(cfg)
    return {o: data["eval"][o] for o in data["objectives"]}


def _prompt_ids(tok, prompt):
    from mtalign_jax.data.tokenizer import as_messages

    return tok.encode_chat(as_messages(prompt), add_generation_prompt=True)


def run_sweep(model_path: str, out_dir: str, *, data: Optional[str] = None, grid: int = 11,
              reference: Optional[str] = None, beta: Optional[float] = None,
              baselines: Optional[str] = None, generate_n: int = 0, max_new_tokens: int = 64,
              judges: Optional[str] = None, max_len: Optional[int] = None,
              max_prompt_len: Optional[int] = None, batch_size: int = 8) -> dict:
    """The whole sweep (module docstring); returns what sweep.json holds."""
    from mtalign_jax.eval import pareto
    from mtalign_jax.hf.load import load_pretrained

    cfg = _run_config(model_path)
    rows = load_rows(data, cfg)
    objectives = list(rows)
    model, params, tok = load_pretrained(model_path)
    k = model.num_heads
    heads = [f"head{i}" for i in range(k)]
    if cfg is not None and cfg.get("task") == "mahdpo":
        heads = [o.strip() for o in str(cfg.data.objectives).split(",")]
    if len(heads) != k:
        raise ValueError(f"{model_path}: {k} heads but its config names {len(heads)} objectives")
    ref_name = reference or (None if cfg is None
                             else cfg.model.get("reference", "") or cfg.model.name)
    if not ref_name:
        raise ValueError("--reference is required when --model is not a training workdir")
    if beta is None:
        beta = cfg.loss.beta if cfg is not None and "loss" in cfg else 0.1
    beta = float(beta)
    max_len = int(max_len or (cfg.data.max_len if cfg is not None else 512))
    max_prompt_len = int(max_prompt_len or (cfg.data.max_prompt_len if cfg is not None else 256))
    enc = dict(max_len=max_len, max_prompt_len=max_prompt_len, batch_size=batch_size)

    ref_model, ref_params, _ = load_pretrained(ref_name, num_heads=1)
    if ref_model.cfg.vocab_size != model.cfg.vocab_size:
        raise ValueError(f"reference {ref_name} has vocab {ref_model.cfg.vocab_size} but "
                         f"{model_path} has {model.cfg.vocab_size}")
    ref = {o: score_pairs(ref_model, ref_params, tok, rows[o], [[1.0]], **enc)[0]
           for o in objectives}
    w = weight_grid(k, grid)
    acc, margin = {}, {}
    for o in objectives:
        lp = score_pairs(model, params, tok, rows[o], w, **enc)
        acc[o], margin[o] = preference_scores(lp, ref[o], beta)

    records = [{"weights": [float(x) for x in wi],
                "scores": {o: float(acc[o][g]) for o in objectives},
                "margins": {o: float(margin[o][g]) for o in objectives}}
               for g, wi in enumerate(w)]

    os.makedirs(out_dir, exist_ok=True)
    if generate_n:
        _generate(model, params, tok, rows, w, records, generate_n, max_new_tokens, judges,
                  os.path.join(out_dir, "generations.jsonl"))

    base_points = {}
    for item in filter(None, (s.strip() for s in (baselines or "").split(","))):
        name, sep, path = item.partition(":")
        if not sep:
            raise ValueError(f"--baselines: expected NAME:WORKDIR, got {item!r}")
        bm, bp, _ = load_pretrained(path)
        bs = {}
        for o in objectives:
            lp = score_pairs(bm, bp, tok, rows[o], [[1.0] + [0.0] * (bm.num_heads - 1)], **enc)
            bs[o] = float(preference_scores(lp, ref[o], beta)[0][0])
        base_points[name] = {"path": path, "scores": bs}

    pts = np.asarray([[r["scores"][o] for o in objectives] for r in records])
    front = pareto.pareto_front(pts).tolist()
    result = {"model": model_path, "reference": ref_name, "beta": beta, "heads": heads,
              "objectives": objectives, "pairs": {o: len(rows[o]) for o in objectives},
              "grid": records, "pareto_front": front,
              "hypervolume": pareto.hypervolume(pts, np.zeros(len(objectives))),
              "baselines": base_points}
    with open(os.path.join(out_dir, "sweep.json"), "w") as f:
        json.dump(result, f, indent=2)
    _write_csv(os.path.join(out_dir, "sweep.csv"), records, heads, objectives)
    result["plots"] = _plots(out_dir, records, heads, objectives, base_points)
    return result


def _generate(model, params, tok, rows, w, records, n, max_new_tokens, judges, path):
    from mtalign_jax.decoding.sampling import generate

    prompts, seen = [], set()
    for pair in itertools.zip_longest(*rows.values()):  # round-robin over the objectives
        for r in pair:
            key = json.dumps(r["prompt"], sort_keys=True) if r else None
            if r and key not in seen and len(prompts) < n:
                seen.add(key)
                prompts.append(r["prompt"])
    judge_models = {}
    if judges:
        from mtalign_jax.eval.scoring import load_reward_model

        for item in filter(None, (s.strip() for s in judges.split(","))):
            name, _, p = item.partition(":")
            judge_models[name] = load_reward_model(p)
    ids = [_prompt_ids(tok, p) for p in prompts]
    with open(path, "w") as f:
        for wi, rec in zip(w, records):
            res = generate(model, params, ids, max_new_tokens=max_new_tokens,
                           head_weights=wi if len(wi) > 1 else None, tokenizer=tok)
            texts = [r.text for r in res]
            for name, rm in judge_models.items():
                from mtalign_jax.eval.scoring import score_texts

                rec["scores"][f"judge/{name}"] = float(np.mean(score_texts(rm, prompts, texts)))
            for p, t in zip(prompts, texts):
                f.write(json.dumps({"weights": rec["weights"], "prompt": p, "completion": t})
                        + "\n")


def _write_csv(path, records, heads, objectives):
    keys = sorted({k for r in records for k in r["scores"]}, key=lambda k: (
        k not in objectives, objectives.index(k) if k in objectives else 0, k))
    with open(path, "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow([f"w_{h}" for h in heads] + keys + [f"margin/{o}" for o in objectives])
        for r in records:
            wr.writerow(r["weights"] + [r["scores"].get(k, "") for k in keys]
                        + [r["margins"][o] for o in objectives])


def _plots(out_dir, records, heads, objectives, base_points) -> list[str]:
    from mtalign_jax.eval import pareto

    if len(objectives) < 2:
        return []
    pairs = list(itertools.combinations(range(len(objectives)), 2))
    out = []
    for a, b in pairs:
        name = "pareto.png" if len(pairs) == 1 else f"pareto_{objectives[a]}_{objectives[b]}.png"
        pts = [[r["scores"][objectives[a]], r["scores"][objectives[b]]] for r in records]
        labels = ["w=(" + ",".join(f"{x:.2g}" for x in r["weights"]) + ")" for r in records]
        base = {n: (v["scores"][objectives[a]], v["scores"][objectives[b]])
                for n, v in base_points.items()}
        out.append(pareto.plot_front(
            pts, labels, base, os.path.join(out_dir, name), xlabel=f"{objectives[a]} accuracy",
            ylabel=f"{objectives[b]} accuracy",
            title=f"head-weight sweep ({', '.join(heads)})"))
    return out


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m mtalign_jax.sweep", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a multi-head workdir (or model dir)")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--data", default="", help="objective:PATH,... eval pair files")
    ap.add_argument("--grid", type=int, default=11, help="grid points per simplex edge")
    ap.add_argument("--reference", default="", help="reference model (default: the run's)")
    ap.add_argument("--beta", type=float, default=None, help="beta of the implicit reward")
    ap.add_argument("--baselines", default="", help="name:WORKDIR,... drawn as points")
    ap.add_argument("--generate", type=int, default=0, help="decode the first N eval prompts")
    ap.add_argument("--max_new_tokens", type=int, default=64)
    ap.add_argument("--judges", default="", help="objective:RM_WORKDIR,... to score decodes")
    ap.add_argument("--max_len", type=int, default=0)
    ap.add_argument("--max_prompt_len", type=int, default=0)
    a = ap.parse_args(argv)
    res = run_sweep(a.model, a.out, data=a.data or None, grid=a.grid,
                    reference=a.reference or None, beta=a.beta, baselines=a.baselines or None,
                    generate_n=a.generate, max_new_tokens=a.max_new_tokens,
                    judges=a.judges or None, max_len=a.max_len or None,
                    max_prompt_len=a.max_prompt_len or None)
    for r in res["grid"]:
        print("w=(" + ",".join(f"{x:.2f}" for x in r["weights"]) + ") "
              + " ".join(f"{k}={v:.3f}" for k, v in r["scores"].items()))
    print(f"hypervolume {res['hypervolume']:.4f}; wrote {a.out}/sweep.json, sweep.csv"
          + "".join(f", {os.path.basename(p)}" for p in res["plots"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
