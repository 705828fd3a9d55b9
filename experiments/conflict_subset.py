"""Conflict subset (PAPER.md §6.4): pairs on which two objectives disagree; single-head DPO on
the pooled pairs vs MAH-DPO.

    python -m experiments.conflict_subset                  # mini: conflicting pairs from the demo's
    python -m experiments.conflict_subset --ultrafeedback /data/ultrafeedback.jsonl [--scale paper]
    python -m experiments.conflict_subset --scale smoke    # tiny preset, SYNTHETIC conflict pairs

Data. With `--ultrafeedback PATH`: UltraFeedback's conflict subset (the `ultrafeedback_conflict`
source: prompts whose helpfulness pair and honesty pair disagree), objectives helpfulness and
honesty (configs/mahdpo_hv.py hyperparameters, two heads). Otherwise (mini), conflicting pairs
built from the offline sources: an engagement reward model (trained here on the engagement
training pairs) scores both responses of every accuracy pair; where it prefers the incorrect
(rejected) answer, the pair enters the subset twice: as an accuracy pair (correct > incorrect)
and, on the same prompt, as an engagement pair (incorrect > correct). Smoke: the SYNTHETIC
conflict pairs (data/synthetic.py, conflict=True: the wrong answer carries the engaging tail).
Rows: dpo_mixed (one head on the pooled conflicting pairs: the paper's Single-Head DPO) and
MAH-DPO (ensemble and each head). Metric: held-out preference accuracy per objective on the
subset (experiments/common.py).

Budget (mini, 2 CPU cores): the engagement RM, then 2 runs of 16 steps per seed: about 10 minutes
a seed.

Paper's numbers (UltraFeedback conflict subset, Llama-3.1-8B):

| method | Help | Honest |
|---|---|---|
| Single-Head DPO | 0.34 | 0.07 |
| MAH-DPO Ensemble | 0.612 | 0.353 |
"""
from __future__ import annotations

import os
import sys

from experiments import common

PAPER = __doc__[__doc__.index("| method"):]


def add_flags(ap):
    ap.add_argument("--ultrafeedback", default="", help="UltraFeedback JSONL (openbmb format)")


def ultrafeedback_files(args, path: str) -> dict[str, str]:
    from mtalign_jax.data.sources import load_source

    rows = load_source("ultrafeedback_conflict", path=path)
    out = {}
    for o in ("helpfulness", "honesty"):
        mine = [r for r in rows if r["objective"] == o]
        if not mine:
            raise ValueError(f"{path}: the conflict subset has no {o} pair")
        out[o] = common.write_jsonl(mine, os.path.join(args.runs, "data", f"uf_conflict_{o}.jsonl"))
    return out


def offline_conflict_files(args) -> dict[str, str]:
    """The mini subset (module docstring) from the demo's (or --data) pair files."""
    from mtalign_jax.eval.scoring import load_reward_model, score_texts

    files = common.pair_files(args)
    cfg = common.load_config("mahdpo_math", args.scale_cfg.variant,
                             {"data.files": common.files_spec(files)})
    eng_train, _ = common.split_rows(files["engagement"], "engagement", cfg)
    rm = load_reward_model(common.train_reward_model(args, eng_train, "eng_conflict"))
    acc_rows = list(common.split_rows(files["accuracy"], "accuracy", cfg)[0]) + list(
        common.split_rows(files["accuracy"], "accuracy", cfg)[1])
    prompts = [r["prompt"] for r in acc_rows]
    sc = score_texts(rm, prompts, [r["chosen"] for r in acc_rows])
    sr = score_texts(rm, prompts, [r["rejected"] for r in acc_rows])
    conflict = [r for r, a, b in zip(acc_rows, sc, sr) if b > a]
    if len(conflict) < 4:
        raise ValueError(f"only {len(conflict)} conflicting pairs in {files['accuracy']}: too "
                         f"few for a conflict study")
    acc = [dict(r, objective="accuracy", conflict=True) for r in conflict]
    eng = [dict(r, objective="engagement", chosen=r["rejected"], rejected=r["chosen"],
                conflict=True) for r in conflict]
    d = os.path.join(args.runs, "data")
    return {"accuracy": common.write_jsonl(acc, os.path.join(d, "conflict_accuracy.jsonl")),
            "engagement": common.write_jsonl(eng, os.path.join(d, "conflict_engagement.jsonl"))}


def run(args) -> dict:
    v = args.scale_cfg.variant
    if args.ultrafeedback:
        files, mah_cfg = ultrafeedback_files(args, args.ultrafeedback), "mahdpo_hv"
    elif args.scale == "smoke":
        rows = common.synthetic_rows(common.OBJECTIVES, args.scale_cfg.synthetic_pairs,
                                     conflict=True)
        d = os.path.join(args.runs, "data")
        files = {o: common.write_jsonl(rows[o], os.path.join(d, f"synthetic_conflict_{o}.jsonl"))
                 for o in common.OBJECTIVES}
        mah_cfg = "mahdpo_math"
    else:
        files, mah_cfg = offline_conflict_files(args), "mahdpo_math"
    k = len(files)
    cfg = common.load_config(mah_cfg, v, {"data.files": common.files_spec(files),
                                          "data.objectives": ",".join(files),
                                          "model.num_heads": k})
    held = {o: common.split_rows(p, o, cfg)[1] for o, p in files.items()}
    score = common.Scorer.for_config(cfg, held, args.scale_cfg.eval_pairs)
    res = common.Results()
    for seed in args.seed_list:
        base_ov = common.preference_overrides(args, files, seed)
        mixed = common.train("dpo_mixed", v, base_ov, args.runs, f"conflict_dpo_mixed-s{seed}")
        res.add_all("single-head DPO (pooled)", {o: a[0] for o, a in score(mixed.workdir).items()})
        mah = common.train(mah_cfg, v, dict(base_ov, **{"model.num_heads": k}), args.runs,
                           f"conflict_mahdpo-s{seed}")
        common.add_head_rows(res, score, mah.workdir, list(files), "MAH-DPO")
    return common.write_outputs(
        args, res, title="Conflict subset: pooled single-head DPO vs MAH-DPO",
        notes=f"Objectives {', '.join(files)}; held-out preference accuracy on the conflicting "
              f"pairs ({', '.join(f'{o}: {len(r)}' for o, r in held.items())} held out).",
        paper=PAPER)


def main(argv=None) -> dict:
    return common.run_script("conflict_subset", __doc__, argv, run, add_flags)


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
