"""Training + test-time synergy (PAPER.md §6.3, an excerpt of the paper's Table 5): MAH-DPO head
weights x guided decoding.

    python -m experiments.synergy                          # mini: SmolLM2-135M, demo pairs, 3 seeds
    python -m experiments.synergy --scale paper --data accuracy:ACC.jsonl,engagement:ENG.jsonl
    python -m experiments.synergy --scale smoke            # tiny preset, SYNTHETIC pairs, 1 seed

Policies: the base model, and MAH-DPO (configs/mahdpo_math.py, the same run as
experiments/main_table.py's) at head weights (1,0), (0.5,0.5), (0,1). Each is decoded by plain
sampling, accuracy-guided and engagement-guided decoding (continuing KV cache). Columns and
guides/judge as in experiments/guided_table.py (exact grading; a judge RM kept apart from the
guides). Seeds: a MAH-DPO run per seed, and the decoding streams.

Budget (mini, 2 CPU cores): one MAH-DPO run per seed (shared with main_table), then 12 decoding
runs x 2 prompt sets x 16 prompts: about 20-25 minutes a seed.

Paper's numbers (Table 5 excerpt):

| Dataset | Configuration | Key metrics |
|---|---|---|
| Math | MAH-DPO + accuracy value guidance | Acc 0.800 / Eng 0.855 |
| Math | MAH-DPO + engagement PRM guidance | Acc 0.721 / Eng 0.906 |
| Human Values | MAH-DPO + honesty PRM guidance | Honest 0.520 / Truth 0.411 |
| Socratic Mind | MAH-DPO + engagement PRM guidance | Acc 0.712 / Eng 0.542 |
"""
from __future__ import annotations

import sys

from experiments import common
from experiments.guided_table import add_flags, base_policy

PAPER = __doc__[__doc__.index("| Dataset"):]
WEIGHTS = ((1.0, 0.0), (0.5, 0.5), (0.0, 1.0))
DECODING = {"sample": ("sample", ()), "+ accuracy guide": ("guided", (("accuracy", 1.0),)),
            "+ engagement guide": ("guided", (("engagement", 1.0),))}


def run(args) -> dict:
    files = common.pair_files(args)
    setup = common.gen_setup(args, files, args.acc_guide, args.eng_guide)
    base = base_policy(args, files)
    res = common.Results()
    for seed in args.seed_list:
        mah = common.train("mahdpo_math", args.scale_cfg.variant,
                           common.preference_overrides(args, files, seed), args.runs,
                           f"mahdpo_math-s{seed}")
        policies = [("base", base, None)] + [
            (f"mahdpo w=({w[0]:g},{w[1]:g})", mah.workdir, list(w)) for w in WEIGHTS]
        for pname, path, hw in policies:
            for dname, (method, guide) in DECODING.items():
                res.add_all(f"{pname} {dname}", common.decode_eval(
                    args, setup, path, method=method, guide=guide, head_weights=hw,
                    seed=seed))
    return common.write_outputs(
        args, res, title="Training + test-time: MAH-DPO head weights x guided decoding",
        notes=f"K = {args.scale_cfg.candidates}; guides {setup.guides}, judge {setup.judge}.",
        paper=PAPER)


def main(argv=None) -> dict:
    return common.run_script("synergy", __doc__, argv, run, add_flags)


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
