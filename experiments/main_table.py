"""Main table (PAPER.md §6.1, the paper's training-time table): MAH-DPO vs the baselines.

    python -m experiments.main_table                       # mini: SmolLM2-135M, demo pairs, 3 seeds
    python -m experiments.main_table --scale paper --data accuracy:ACC.jsonl,engagement:ENG.jsonl
    python -m experiments.main_table --scale smoke         # tiny preset, SYNTHETIC pairs, 1 seed

Rows (every model trained on the same pair files, same steps, same seed per repeat):
  base            the reference model itself (scores 0.5 by construction: the chance line)
  sft             configs/sft.py on the chosen responses of the training pairs
  dpo_single/<o>  configs/dpo_single.py on objective o's pairs only (one per objective)
  dpo_mixed       configs/dpo_mixed.py: one head on the pooled pairs (the paper's Single-Head DPO)
  dpo_scalarized  configs/dpo_scalarized.py, weights 0.5/0.5; each pair's per-objective scores
                  are the implicit rewards of the dpo_single models (written into the pair rows)
  dpo_modpo       configs/dpo_modpo.py, target accuracy, w = 0.5/0.5, the engagement margin from
                  the dpo_single engagement model (MODPO's margin-model recipe)
  dpo_soup        mtalign_jax.soup: the dpo_single models averaged 0.5/0.5
  mahdpo ...      configs/mahdpo_math.py: the equal-weight ensemble (the paper's "MAH-DPO
                  Ensemble") and each head alone (w one-hot)
Metric per objective: held-out preference accuracy of the implicit reward
(experiments/common.py), on the held-out split of each pair file. The paper's metrics are
judged generations (MATH-500 accuracy, a 72B judge's engagement rate); generation metrics at
mini scale are in experiments/guided_table.py and synergy.py.

Budget (mini, 2 CPU cores): 7 trained models per seed, 16 steps each (top 2 layers + heads), plus
held-out scoring of up to 96 pairs per objective per model (the demo's held-out siblings,
`common.heldout_rows`): one seed took 52 minutes (session 7, other jobs sharing the 2 cores).

Paper's numbers (Math, Qwen2.5-7B; Acc = MATH-500 accuracy, Eng = judge engagement rate):

| | Base | SFT | Single-Head DPO | MODPO | DPO Soup | MAH-DPO Ensemble |
|---|---|---|---|---|---|---|
| Acc | 0.711 | 0.730 | 0.725 | 0.728 | 0.726 | 0.725 |
| Eng | 0.501 | 0.592 | 0.716 | 0.737 | 0.735 | 0.873 |
"""
from __future__ import annotations

import os
import sys

from experiments import common

PAPER = __doc__[__doc__.index("| | Base"):]


def scored_files(args, files, singles, scorer_rows, cfg, seed) -> dict[str, str]:
    """Pair files whose rows carry `scores: {objective: [chosen, rejected]}`: the implicit
    rewards beta * (log pi_o - log pi_ref) of each objective's dpo_single model."""
    import numpy as np

    from mtalign_jax.hf.load import load_pretrained
    from mtalign_jax.sweep import score_pairs

    enc = dict(max_len=cfg.data.max_len, max_prompt_len=cfg.data.max_prompt_len)
    ref_model, ref_params, tok = load_pretrained(cfg.model.name, seed=cfg.model.head_seed)
    out = {}
    for o, path in files.items():
        rows = list(scorer_rows[o])
        ref = score_pairs(ref_model, ref_params, tok, rows, [[1.0]], **enc)[0]
        rewards = {}
        for so, wd in singles.items():
            m, p, _ = load_pretrained(wd)
            rewards[so] = cfg.loss.beta * (score_pairs(m, p, tok, rows, [[1.0]], **enc)[0] - ref)
        scored = [dict(r, scores={so: np.asarray(rewards[so][i]).tolist() for so in singles})
                  for i, r in enumerate(rows)]
        out[o] = common.write_jsonl(scored, os.path.join(args.runs, "data",
                                                         f"scored_{o}_seed{seed}.jsonl"))
    return out


def run(args) -> dict:
    from mtalign_jax.data import validate
    from mtalign_jax.soup import make_soup

    files = common.pair_files(args)
    v = args.scale_cfg.variant
    cfg = common.load_config("mahdpo_math", v, {"data.files": common.files_spec(files)})
    held = {o: common.heldout_rows(p, o, cfg) for o, p in files.items()}
    train_rows = {o: common.split_rows(p, o, cfg)[0] for o, p in files.items()}
    score = common.Scorer.for_config(cfg, held, args.scale_cfg.eval_pairs)
    sft_file = common.write_jsonl(
        [{"prompt": r["prompt"], "response": r["chosen"]} for o in files for r in train_rows[o]],
        os.path.join(args.runs, "data", "sft_chosen.jsonl"))
    res = common.Results()
    k = len(files)
    for seed in args.seed_list:
        ov = lambda **kw: common.preference_overrides(args, files, seed, **kw)  # noqa: E731
        res.add_all("base", {o: 0.5 for o in files})  # the reference scores 0.5 by definition
        sft_ov = {"data.files": sft_file, "data.source": "", "seed": seed,
                  **{k_: v_ for k_, v_ in ov().items() if not k_.startswith("data.")}}
        sft = common.train("sft", v, sft_ov, args.runs, f"sft-s{seed}")
        res.add_all("sft", {o: a[0] for o, a in score(sft.workdir).items()})
        singles = {}
        for o, path in files.items():
            r = common.train("dpo_single", v, ov(**{"data.files": f"{o}:{path}",
                                                    "data.objectives": o}),
                             args.runs, f"dpo_{o}-s{seed}")
            singles[o] = r.workdir
            res.add_all(f"dpo_single/{o}", {x: a[0] for x, a in score(r.workdir).items()})
        mixed = common.train("dpo_mixed", v, ov(), args.runs, f"dpo_mixed-s{seed}")
        res.add_all("dpo_mixed", {o: a[0] for o, a in score(mixed.workdir).items()})
        scored = scored_files(args, files, singles, train_rows, cfg, seed)
        validate.validate_files(common.files_spec(scored), "mahdpo", list(files))
        scal = common.train("dpo_scalarized", v,
                            ov(**{"data.files": common.files_spec(scored),
                                  "scalarized.weights": "accuracy:0.5,engagement:0.5"}),
                            args.runs, f"dpo_scalarized-s{seed}")
        res.add_all("dpo_scalarized", {o: a[0] for o, a in score(scal.workdir).items()})
        modpo = common.train("dpo_modpo", v,
                             ov(**{"data.files": f"accuracy:{files['accuracy']}",
                                   "data.objectives": "accuracy",
                                   "modpo.weights": "accuracy:0.5,engagement:0.5",
                                   "modpo.margin_models": f"engagement:{singles['engagement']}",
                                   "modpo.margin_beta": float(cfg.loss.beta)}),
                             args.runs, f"dpo_modpo-s{seed}")
        res.add_all("dpo_modpo", {o: a[0] for o, a in score(modpo.workdir).items()})
        soup_dir = os.path.join(args.runs, f"dpo_soup-s{seed}")
        make_soup([singles[o] for o in files], [1.0 / k] * k, soup_dir)
        res.add_all("dpo_soup", {o: a[0] for o, a in score(soup_dir).items()})
        mah = common.train("mahdpo_math", v, ov(), args.runs, f"mahdpo_math-s{seed}")
        common.add_head_rows(res, score, mah.workdir, list(files), "mahdpo")
    return common.write_outputs(
        args, res, title="MAH-DPO vs baselines: held-out preference accuracy per objective",
        notes="Rows are methods, columns objectives; every number is the held-out preference "
              "accuracy of the model's implicit reward (experiments/common.py).",
        paper=PAPER)


def main(argv=None) -> dict:
    return common.run_script("main_table", __doc__, argv, run)


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
