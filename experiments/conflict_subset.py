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
and, on the same prompt, as an engagement pair (incorrect > correct). The subset is trained on
the conflicts among the demo's training pairs (`demo_out/pairs_accuracy.jsonl`) and scored on
those among its 200 held-out pairs (`heldout_accuracy.jsonl`, prompts no training pair uses);
for a --data file without that sibling, on its own train / held-out split. Smoke: the SYNTHETIC
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


def conflicting(rows, chosen_scores, rejected_scores) -> dict[str, list]:
    """The conflict pairs among accuracy pair rows: those whose rejected (incorrect) answer an
    engagement RM scores above the chosen (correct) one. Each enters twice, as an accuracy pair
    (as given) and as an engagement pair on the same prompt with the two answers swapped.

    rows: N accuracy pair rows; chosen_scores, rejected_scores: [N] RM scores of their answers.
    """
    hits = [r for r, a, b in zip(rows, chosen_scores, rejected_scores) if b > a]
    return {"accuracy": [dict(r, objective="accuracy", conflict=True) for r in hits],
            "engagement": [dict(r, objective="engagement", chosen=r["rejected"],
                                rejected=r["chosen"], conflict=True) for r in hits]}


def offline_sources(path: str, cfg) -> tuple[list, list]:
    """(training, held-out) accuracy pair rows the mini subset is built from: for a demo pair
    file with its `heldout_accuracy.jsonl` sibling, every pair of the file and the sibling's 200
    pairs (prompts no training pair uses); for any other file, its own split (`split_rows`)."""
    from mtalign_jax.data import validate

    sibling = common.heldout_sibling(path, "accuracy")
    if sibling:
        return (list(validate.load_preference_file(path, "accuracy")),
                list(validate.load_preference_file(sibling, "accuracy")))
    return common.split_rows(path, "accuracy", cfg)


def offline_conflict_files(args) -> tuple[dict[str, str], dict[str, list]]:
    """The mini subset (module docstring) from the demo's (or --data) pair files: ({objective:
    training conflict file}, {objective: held-out conflict rows})."""
    from mtalign_jax.eval.scoring import load_reward_model, score_texts

    files = common.pair_files(args)
    cfg = common.load_config("mahdpo_math", args.scale_cfg.variant,
                             {"data.files": common.files_spec(files)})
    eng_train, _ = common.split_rows(files["engagement"], "engagement", cfg)
    rm = load_reward_model(common.train_reward_model(args, eng_train, "eng_conflict"))

    def find(rows):
        prompts = [r["prompt"] for r in rows]
        return conflicting(rows, score_texts(rm, prompts, [r["chosen"] for r in rows]),
                           score_texts(rm, prompts, [r["rejected"] for r in rows]))

    train_rows, held_rows = offline_sources(files["accuracy"], cfg)
    train, held = find(train_rows), find(held_rows)
    for name, got, least in (("training", train, 4), ("held-out", held, 2)):
        if len(got["accuracy"]) < least:
            raise ValueError(f"only {len(got['accuracy'])} conflicting {name} pairs from "
                             f"{files['accuracy']}: too few for a conflict study (need {least})")
    d = os.path.join(args.runs, "data")
    return ({o: common.write_jsonl(train[o], os.path.join(d, f"conflict_{o}.jsonl"))
             for o in train}, held)


def run(args) -> dict:
    v = args.scale_cfg.variant
    held = None
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
        (files, held), mah_cfg = offline_conflict_files(args), "mahdpo_math"
    k = len(files)
    cfg = common.load_config(mah_cfg, v, {"data.files": common.files_spec(files),
                                          "data.objectives": ",".join(files),
                                          "model.num_heads": k})
    if held is None:
        held = {o: common.split_rows(p, o, cfg)[1] for o, p in files.items()}
    cap = args.scale_cfg.eval_pairs
    score = common.Scorer.for_config(cfg, held, cap)
    res = common.Results()
    for seed in args.seed_list:
        base_ov = common.preference_overrides(args, files, seed)
        mixed = common.train("dpo_mixed", v, base_ov, args.runs, f"conflict_dpo_mixed-s{seed}")
        res.add_all("single-head DPO (pooled)", {o: a[0] for o, a in score(mixed.workdir).items()})
        mah = common.train(mah_cfg, v, dict(base_ov, **{"model.num_heads": k}), args.runs,
                           f"conflict_mahdpo-s{seed}")
        common.add_head_rows(res, score, mah.workdir, list(files), "MAH-DPO")
    scored = ", ".join(f"{o} {min(len(r), cap)} of {len(r)} held out" for o, r in held.items())
    return common.write_outputs(
        args, res, title="Conflict subset: pooled single-head DPO vs MAH-DPO",
        notes=f"Objectives {', '.join(files)}; held-out preference accuracy on the conflicting "
              f"pairs (scored: {scored}). "
              + ("" if args.ultrafeedback else
                 "Each engagement pair is an accuracy pair with its answers swapped, so a row "
                 "scored with one head reads x / 1 - x: compare each MAH-DPO head on its own "
                 "objective with the pooled single head."),
        paper=PAPER)


def main(argv=None) -> dict:
    return common.run_script("conflict_subset", __doc__, argv, run, add_flags)


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
