"""Loss-term ablations of MAH-DPO (PAPER.md §3.3-3.4, §6.4; DESIGN.md §1 (c)): beta, IPO vs DPO,
label smoothing, reference-free, head-init noise, trunk freezing, per-head loss weights.

    python -m experiments.loss_ablations                   # mini: SmolLM2-135M, demo pairs, 3 seeds
    python -m experiments.loss_ablations --only beta_x0.5,ipo
    python -m experiments.loss_ablations --scale paper --data accuracy:ACC.jsonl,engagement:ENG.jsonl
    python -m experiments.loss_ablations --scale smoke     # tiny preset, SYNTHETIC pairs, 1 seed

Every row is configs/mahdpo_math.py at the scale's variant with one change (`VARIANTS`):
  default              the config as is (beta 0.1 at mini/paper, 0.5 on tiny; DPO; noise 1e-3)
  beta_x0.5, beta_x3   loss.beta halved / tripled
  ipo                  loss.ipo (IPO's squared loss instead of DPO's log-sigmoid)
  label_smoothing_0.1  loss.label_smoothing 0.1 (conservative DPO)
  reference_free       loss.reference_free (the reference terms dropped from the margin)
  head_noise_0         model.head_init_noise 0 (the heads start identical)
  head_noise_x10       model.head_init_noise x10
  heads_only           optim.freeze trunk/.* (only the heads train)
  weights_0.75_0.25    loss.objective_weights (0.75, 0.25): the trunk loss leans on accuracy
Columns: held-out preference accuracy of each head on its own objective (implicit reward vs
the reference, experiments/common.py), of the 0.5/0.5 ensemble, and the final training loss.
The paper reports no numbers for these ablations (its hyperparameters: beta 0.1, plain sigmoid
DPO, label smoothing 0, reference-based, noise 1e-3, full fine-tuning, equal weights).

Budget (mini, 2 CPU cores): 10 runs of 16 steps per seed (top 2 layers + heads): about 30-40
minutes a seed; `--only` runs a subset.
"""
from __future__ import annotations

import sys

from experiments import common

PAPER = ("No table in the paper; its settings: beta 0.1, sigmoid DPO, label smoothing 0, "
         "reference-based, head noise 1e-3, full fine-tuning, equal objective weights "
         "(PAPER.md §7.1).")


def variants(cfg) -> dict[str, dict]:
    """Name -> overrides of one ablation, relative to the config's own values."""
    beta, noise = float(cfg.loss.beta), float(cfg.model.head_init_noise)
    return {
        "default": {},
        "beta_x0.5": {"loss.beta": beta * 0.5},
        "beta_x3": {"loss.beta": beta * 3},
        "ipo": {"loss.ipo": True},
        "label_smoothing_0.1": {"loss.label_smoothing": 0.1},
        "reference_free": {"loss.reference_free": True},
        "head_noise_0": {"model.head_init_noise": 0.0},
        "head_noise_x10": {"model.head_init_noise": noise * 10},
        "heads_only": {"optim.freeze": ("trunk/.*",), "optim.train_top_layers": 0},
        "weights_0.75_0.25": {"loss.objective_weights": (0.75, 0.25)},
    }


def add_flags(ap):
    ap.add_argument("--only", default="", help="comma-separated variant names")


def run(args) -> dict:
    files = common.pair_files(args)
    v = args.scale_cfg.variant
    cfg = common.load_config("mahdpo_math", v, {"data.files": common.files_spec(files)})
    table = variants(cfg)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in table]
        if unknown:
            raise ValueError(f"--only: unknown variant(s) {unknown}; known: {list(table)}")
        table = {n: table[n] for n in names}
    held = {o: common.heldout_rows(p, o, cfg) for o, p in files.items()}
    score = common.Scorer.for_config(cfg, held, args.scale_cfg.eval_pairs)
    k = len(files)
    res = common.Results()
    for seed in args.seed_list:
        for name, extra in table.items():
            ov = common.preference_overrides(args, files, seed, **extra)
            tag = f"ablation_{name}-s{seed}" if extra else f"mahdpo_math-s{seed}"
            run_ = common.train("mahdpo_math", v, ov, args.runs, tag)
            acc = score(run_.workdir, [common.one_hot(k, i) for i in range(k)]
                        + [common.uniform(k)])
            row = {f"{o} (own head)": float(acc[o][i]) for i, o in enumerate(files)}
            row.update({f"{o} (ensemble)": float(acc[o][k]) for o in files})
            row["train loss"] = float(run_.metrics["loss"])
            res.add_all(name, row)
    return common.write_outputs(
        args, res, title="Loss-term ablations of MAH-DPO",
        notes="Each row changes one setting of configs/mahdpo_math.py (module docstring).",
        paper=PAPER)


def main(argv=None) -> dict:
    return common.run_script("loss_ablations", __doc__, argv, run, add_flags)


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
