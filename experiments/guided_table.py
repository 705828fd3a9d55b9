"""Test-time table (PAPER.md §6.2): plain sampling vs best-of-N vs PRM/RM-guided decoding.

    python -m experiments.guided_table                     # mini: SmolLM2-135M base policy, 3 seeds
    python -m experiments.guided_table --acc_guide workdirs/value_math --eng_guide workdirs/rm_eng
    python -m experiments.guided_table --scale paper --data accuracy:ACC.jsonl,engagement:ENG.jsonl
    python -m experiments.guided_table --scale smoke       # tiny preset, SYNTHETIC pairs, 1 seed

Policy: the base model (as in the paper's table). Rows: `sample` (T 1.0, top-k 50), and for each
guide (accuracy, engagement, and both at 0.5/0.5) `best_of_n` (K whole responses reranked) and
`guided` (K candidate steps per step, the best kept, continuing KV cache;
mtalign_jax/decoding/guided.py). Columns: `accuracy` = exact grading of the answers to the
held-out arithmetic prompts (math steps: blank lines); `engagement` = the judge's score
(sigmoid of a Bradley-Terry RM) of the replies to held-out conversation prefixes (sentence
steps). Guides: by default outcome RMs trained here (configs/rm_engagement.py) on the accuracy
training pairs and on one half of the engagement training pairs; the judge on the other half
(a model never guides and judges, eval/judges.py). `--acc_guide` / `--eng_guide` plug in a PRM
or value-model workdir instead (e.g. configs/value_math.py, the paper's accuracy value model).
Seeds vary the decoding streams (the guides and judge are trained once).

Budget (mini, 2 CPU cores): 3 RMs on cached frozen-trunk features (a few minutes), then 7
decoding runs x 2 prompt sets x 16 prompts x 32 tokens (K=4) per seed: about 10-15 minutes a seed.

Paper's numbers (base policy, Qwen2.5-7B):

| Dataset | Configuration | Primary | Secondary |
|---|---|---|---|
| Math | Base (stepwise sampling) | Acc 0.685, Eng 0.513 | - |
| Math | Accuracy value-guided | Acc 0.799 (+11.4) | Eng 0.455 |
| Math | Engagement PRM-guided | Acc 0.701 | Eng 0.719 (+20.6) |
| Human Values | Helpfulness PRM-guided | Help 0.671 | Honest 0.405, Truth 0.279 |
| Human Values | Honesty PRM-guided | Help 0.645 | Honest 0.469, Truth 0.338 |
| Socratic Mind | Engagement PRM-guided | Acc 0.651 | Eng 0.466 (+12.8) |
"""
from __future__ import annotations

import sys

from experiments import common

PAPER = __doc__[__doc__.index("| Dataset"):]
GUIDES = {"accuracy guide": (("accuracy", 1.0),), "engagement guide": (("engagement", 1.0),),
          "both guides 0.5/0.5": (("accuracy", 0.5), ("engagement", 0.5))}


def add_flags(ap):
    ap.add_argument("--acc_guide", default="", help="PRM / value / RM workdir guiding accuracy")
    ap.add_argument("--eng_guide", default="", help="PRM / RM workdir guiding engagement")


def base_policy(args, files) -> str:
    return common.load_config("mahdpo_math", args.scale_cfg.variant).model.name


def run(args) -> dict:
    files = common.pair_files(args)
    setup = common.gen_setup(args, files, args.acc_guide, args.eng_guide)
    policy = base_policy(args, files)
    res = common.Results()
    for seed in args.seed_list:
        res.add_all("sample", common.decode_eval(args, setup, policy, seed=seed))
        for method in ("best_of_n", "guided"):
            for gname, guide in GUIDES.items():
                res.add_all(f"{method} ({gname})", common.decode_eval(
                    args, setup, policy, method=method, guide=guide, seed=seed))
    return common.write_outputs(
        args, res, title="Test-time guidance: base policy, sample vs best-of-N vs guided",
        notes=f"K = {args.scale_cfg.candidates} candidates; {len(setup.acc_prompts)} arithmetic "
              f"and {len(setup.eng_prompts)} conversation prompts; guides {setup.guides}, "
              f"judge {setup.judge}.", paper=PAPER)


def main(argv=None) -> dict:
    return common.run_script("guided_table", __doc__, argv, run, add_flags)


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
