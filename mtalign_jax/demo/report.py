"""The demo's report: results.md (methods x objectives, the paper's numbers beside),
results.json (every number, seeds, per-stage seconds, run_seconds) and tradeoff.png."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re

import numpy as np

from mtalign_jax.demo.config import TRIMS

# PAPER.md section 6.1 (Math: accuracy on MATH-500, engagement = fraction judged engaging) and
# 6.3 (MAH-DPO + guidance); quoted for the shape of the result only.
PAPER = {
    "Base": "0.711 / 0.501",
    "DPO (mixed data)": "0.725 / 0.716 (Single-Head DPO)",
    "MAH-DPO w=(0.5,0.5)": "0.725 / 0.873 (MAH-DPO Ensemble)",
    "MAH-DPO w=(0.5,0.5) + guided decoding": "0.800 / 0.855 (acc. guide); 0.721 / 0.906 (eng. guide)",
}


def _fmt(x, se):
    return f"{x:.3f} ± {se:.3f}"


def _finite_only(obj):
    """Non-finite floats become None (JSON has no NaN); the test then flags them."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_only(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_only(v) for v in obj]
    return obj


def write(ctx, timings: dict, cached: dict, run_seconds: float, machine: dict) -> dict:
    """machine: `mtalign_jax.machine.describe()` of the host this run measured its times on."""
    from mtalign_jax.eval.pareto import hypervolume, plot_front
    from mtalign_jax.models.presets import get_preset

    cfg, r, wd = ctx.cfg, ctx.results, ctx.workdir
    gen, pref = r["eval_generation"], r["eval_preference"]
    rm = r["rm_engagement"]["roles"]
    pr = r["pairs"]

    curve_names = [n for n in gen if re.fullmatch(r"MAH-DPO w=\([^)]*\)", n)]  # greedy, by w
    curve = [(gen[n]["accuracy"], gen[n]["engagement"]) for n in curve_names]
    others = {n: (gen[n]["accuracy"], gen[n]["engagement"]) for n in gen if n not in curve_names}
    png = plot_front(curve, [n.replace("MAH-DPO ", "") for n in curve_names], others,
                     os.path.join(wd, "tradeoff.png"), xlabel="accuracy (exact match)",
                     ylabel="engagement (fraction the judge RM calls engaging)",
                     title="SmolLM2-135M: MAH-DPO head-weight sweep vs baselines")
    hv = hypervolume(np.asarray(curve), ref=(0.0, 0.0))

    results = {
        "run_seconds": run_seconds,
        "quick": cfg.quick,
        "config": {k: (list(v) if isinstance(v, tuple) else v)
                   for k, v in dataclasses.asdict(cfg).items()},
        "seeds": {"data": cfg.seed, "heads": cfg.head_seed, "sampling": cfg.seed,
                  "eval_generation": cfg.seed + 1000},
        "stage_seconds": timings,
        "stage_cached": cached,
        "machine": machine,
        "data_sizes": r["data"]["sizes"],
        "reward_models": {
            **{role: {"role": role, "trained_on": f"chitchat part '{role}' (disjoint by topic)",
                      **v} for role, v in rm.items()},
            "accuracy_guide": {"role": "guide (accuracy)",
                               "trained_on": "graded base samples of the training prompts",
                               **pr["accuracy_rm_eval"]}},
        "pairs": {**pr["stats"], "heldout_accuracy_pairs": len(pr["heldout_pairs"]),
                  "base_sample_accuracy": pr["base_sample_accuracy"]},
        "sampled_tokens": {k: v["tokens"] for k, v in r["samples"].items()},
        "training": {n: {"final_loss": v["log"][-1]["loss"], "losses": [x["loss"] for x in v["log"]]}
                     for n, v in r["train"].items()},
        "preference_accuracy": pref,
        "generation": {n: {k: v for k, v in m.items() if k != "examples"}
                       for n, m in gen.items()},
        "examples": {n: m["examples"] for n, m in gen.items()},
        "hypervolume_head_weight_curve": hv,
    }
    json_path = os.path.join(wd, "results.json")
    with open(json_path, "w") as f:
        json.dump(_finite_only(results), f, indent=1)

    reused = [n for n in timings if cached.get(n)]
    if reused:  # a resumed run: say which numbers come from the stage cache
        when = (f"Every number below was measured by this demo in this workdir (this process: "
                f"{run_seconds:.0f} s wall; loaded from the stage cache of an earlier run: "
                f"{', '.join(reused)}, {sum(timings[n] for n in reused):.0f} s when computed")
    else:
        when = f"Every number below was measured in this run ({run_seconds:.0f} s wall"
    lines = [
        "# mtalign_jax demo: MAH-DPO on SmolLM2-135M-Instruct" + (" (--quick)" if cfg.quick
                                                                   else ""),
        "",
        f"{when}, {machine['cores']} CPUs, {machine['arch']}, {machine['cpu']}, float32 matmul "
        f"{machine['matmul_gflops']:.0f} GFLOP/s measured at the start). Objectives: "
        f"**accuracy** (generated arithmetic word problems, graded by exact integer match) and "
        f"**engagement** (chitchat conversation prefixes; the fraction of responses the held-out "
        f"*judge* RM scores above the median of its own training responses). ± is one standard "
        f"error.",
        "",
        "SFT is skipped: the base model is already instruction-tuned. MAH-DPO has two heads "
        f"(init: base head + {cfg.head_init_noise:g} noise); the lower "
        f"{get_preset('smollm2-135m-instruct').n_layers - cfg.n_top} "
        f"layers are frozen (their activations computed once and shared by every method), the "
        f"top {cfg.n_top} layers and the heads train, {cfg.steps} steps of {cfg.pairs_per_step} "
        f"pairs for every method; reference log-probs precomputed. Compute dtype "
        f"{cfg.dtype}" + (" (matmul inputs; float32 sums, softmax, norms and trained params)."
                          if cfg.dtype != "float32" else "."),
        "",
        "## Generations on held-out prompts "
        f"({cfg.eval_prompts} per objective, greedy unless marked, <= {cfg.max_new_tokens} "
        f"new tokens)",
        "",
        "| method | accuracy | engagement | judge score | paper, Math (acc / eng) |",
        "|---|---|---|---|---|",
    ]
    for n, m in gen.items():
        lines.append(f"| {n} | {_fmt(m['accuracy'], m['accuracy_se'])} | "
                     f"{_fmt(m['engagement'], m['engagement_se'])} | "
                     f"{_fmt(m['judge_score'], m['judge_score_se'])} | {PAPER.get(n, '')} |")
    lines += [
        "",
        f"Guided decoding: K={cfg.guide_k} candidate steps (temperature "
        f"{cfg.guide_temperature:g}, top-k 50; a step ends "
        f"at a newline or sentence end, <= {cfg.step_tokens} tokens), scored by 0.5 x the "
        f"engagement *guide* RM + 0.5 x the accuracy RM (standardised), the best candidate's "
        f"KV cache continues; nothing is re-encoded. Sampled (T={cfg.guide_temperature:g}) and "
        f"best-of-{cfg.guide_k}: {cfg.guide_k} whole responses a prompt at the same temperature, "
        f"top-k 50; the first is the "
        f"plain sample, best-of-{cfg.guide_k} keeps the one the same combined guide scores "
        f"highest. Hypervolume of the head-weight curve "
        f"(ref 0,0): {hv:.4f}.",
        "",
        "## Held-out preference accuracy of the implicit reward",
        "",
        "| method | accuracy pairs | engagement pairs (human ratings) |",
        "|---|---|---|",
    ]
    for n, m in pref.items():
        lines.append(f"| {n} | {_fmt(m['accuracy']['accuracy'], m['accuracy']['se'])} "
                     f"(n={m['accuracy']['pairs']}) | "
                     f"{_fmt(m['engagement']['accuracy'], m['engagement']['se'])} "
                     f"(n={m['engagement']['pairs']}) |")
    lines += ["", "(The base model's implicit reward is identically zero, so it has no row. "
              "MAH-DPO is read through each objective's own head.)", "",
              "## Reward models (heads on the frozen base trunk)", "",
              "| role | trained on | held-out accuracy |", "|---|---|---|"]
    for role, v in rm.items():
        lines.append(f"| {role} (engagement) | {v['train_pairs']} human pairs, own topics | "
                     f"{_fmt(v['heldout_accuracy'], v['heldout_accuracy_se'])} "
                     f"(n={v['heldout_pairs']} pairs) |")
    a = pr["accuracy_rm_eval"]
    lines.append(f"| guide (accuracy) | graded base samples | "
                 f"{_fmt(a['heldout_accuracy'], a['heldout_accuracy_se'])} "
                 f"(n={a['heldout_samples']} samples, base rate {a['heldout_base_rate']:.2f}) |")
    st = pr["stats"]
    lines += ["", "## Pairs (make_pairs on the base model's own samples)", "",
              f"- accuracy: {st['accuracy']['pairs']} pairs from {st['accuracy']['prompts']} "
              f"prompts x {cfg.samples_per_prompt} samples at temperature "
              f"{cfg.sample_temperature:g} ({st['accuracy']['ties']} ties "
              f"dropped; {st['accuracy'].get('gold_pairs', 0)} gold-answer pairs added because "
              f"too few natural ones); base sample accuracy {pr['base_sample_accuracy']:.3f}",
              f"- engagement: {st['engagement']['pairs']} pairs scored by the labeller "
              f"({st['engagement']['ties']} ties dropped)",
              f"- held-out accuracy pairs: {len(pr['heldout_pairs'])} "
              f"({pr.get('heldout_gold_pairs', 0)} of them (exact answer, wrong sample) pairs, "
              f"added up to {cfg.heldout_pairs_min})", "",
              "## Stage times (s)", "",
              "| stage | seconds | cached in this run |", "|---|---|---|"]
    for n, s in timings.items():
        lines.append(f"| {n} | {s:.1f} | {'yes' if cached.get(n) else 'no'} |")
    if cfg.quick:
        lines += ["", "--quick: every stage with 1-2 steps and a handful of prompts; the numbers "
                  "only show that the pipeline runs end to end.", ""]
    else:
        lines += ["", "Trimmed against the issue's sizes to fit the budget: " + "; ".join(TRIMS)
                  + ".", ""]
    md_path = os.path.join(wd, "results.md")
    with open(md_path, "w") as f:
        f.write("\n".join(lines))
    return {"md": md_path, "json": json_path, "png": png, "run_seconds": run_seconds}
