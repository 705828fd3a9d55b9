"""Number of heads (PAPER.md §6.4, the 5-head scaling study): MAH-DPO with 2, 3 and 5 heads.

    python -m experiments.num_heads                        # mini: 5 offline preference sets, 3 seeds
    python -m experiments.num_heads --scale paper \
        --data accuracy:A,engagement:E,helpfulness:H,honesty:O,truthfulness:T
    python -m experiments.num_heads --scale smoke          # tiny preset, SYNTHETIC pairs, 1 seed

configs/mahdpo_five.py trained on its first K objectives (K = 2, 3, 5; `data.objectives` and
`model.num_heads` overridden), on the same pair files. Mini objectives (the config's docstring):
accuracy and engagement (the demo's pair files), tutor_accuracy (`socratic_mind`),
chat_engagement (`chitchat_engagement`), champ_correctness (pairs from `champ_fws`: a solution
without a wrong step over one with an annotated wrong step, same problem), each capped at 400
pairs. Metric: held-out preference accuracy per objective of each objective's own head and of the
uniform ensemble, and their mean over the model's objectives.

Budget (mini, 2 CPU cores): 3 runs of 16 steps per seed (the batch holds 2 pairs per objective):
about 10-15 minutes a seed.

Paper's numbers (5 heads, math + human values): Acc 0.72 / Eng 0.86 / Help 0.65 / Honest 0.45 /
Truth 0.35, all above the base model: more heads do not collapse.
"""
from __future__ import annotations

import os
import sys

import numpy as np

from experiments import common

PAPER = "5 heads: Acc 0.72 / Eng 0.86 / Help 0.65 / Honest 0.45 / Truth 0.35 (all above Base)."
HEADS = (2, 3, 5)
CAP = 400


def champ_pairs() -> list[dict]:
    """CHAMP model solutions: one without a wrong step (chosen) vs one with (rejected)."""
    from mtalign_jax.data.sources import load_source

    by_problem: dict = {}
    for r in load_source("champ_fws"):
        good = r["first_wrong_step"] == -1
        by_problem.setdefault(r["prompt"], ([], []))[0 if good else 1].append(r["response"])
    return [{"prompt": p, "chosen": g, "rejected": b, "objective": "champ_correctness"}
            for p, (goods, bads) in by_problem.items() for g, b in zip(goods, bads)]


def mini_files(args, objectives) -> dict[str, str]:
    from mtalign_jax.data.sources import load_source

    files = dict(common.pair_files(args, ("accuracy", "engagement")))
    sources = {"tutor_accuracy": lambda: load_source("socratic_mind"),
               "chat_engagement": lambda: load_source("chitchat_engagement"),
               "champ_correctness": champ_pairs}
    for o in objectives[2:]:
        rows = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in sources[o]()]
        files[o] = common.write_jsonl(rows[:CAP], os.path.join(args.runs, "data", f"{o}.jsonl"))
    return files


def run(args) -> dict:
    v = args.scale_cfg.variant
    cfg0 = common.load_config("mahdpo_five", v)
    objectives = cfg0.data.objectives.split(",")
    if args.data or args.scale != "mini":
        files = common.pair_files(args, objectives)
    else:
        files = mini_files(args, objectives)
    res = common.Results()
    for k in HEADS:
        sub = {o: files[o] for o in objectives[:k]}
        cfg = common.load_config("mahdpo_five", v, {"data.files": common.files_spec(sub),
                                                    "data.objectives": ",".join(sub),
                                                    "model.num_heads": k})
        held = {o: common.heldout_rows(p, o, cfg) for o, p in sub.items()}
        score = common.Scorer.for_config(cfg, held, args.scale_cfg.eval_pairs)
        for seed in args.seed_list:
            ov = common.preference_overrides(args, sub, seed, **{
                "model.num_heads": k,
                "data.batch_size": 32 - 32 % k if args.scale == "paper" else 2 * k})
            run_ = common.train("mahdpo_five", v, ov, args.runs, f"heads{k}-s{seed}")
            acc = score(run_.workdir, [common.one_hot(k, i) for i in range(k)]
                        + [common.uniform(k)])
            own = {o: float(acc[o][i]) for i, o in enumerate(sub)}
            ens = {o: float(acc[o][k]) for o in sub}
            res.add_all(f"{k} heads (own head)", dict(own, mean=np.mean(list(own.values()))))
            res.add_all(f"{k} heads (ensemble)", dict(ens, mean=np.mean(list(ens.values()))))
    return common.write_outputs(
        args, res, title="Number of heads: MAH-DPO with 2, 3 and 5 heads",
        notes="Held-out preference accuracy per objective ('-': the model has no such head).",
        paper=PAPER)


def main(argv=None) -> dict:
    return common.run_script("num_heads", __doc__, argv, run)


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
