"""Scalarised DPO baseline, task "scalarized": one head, pairs re-labelled by a weighted sum of
objective scores, then plain DPO (PreferenceTask with one head).

Every pair (of every objective's files) needs `scores: {objective: [score_chosen,
score_rejected]}` metadata for each objective with a non-zero weight in
`config.scalarized.weights` (format: training/pair_scores.py; SYNTHETIC rows get rule scores).
With S(y) = sum_o w_o score_o(y), a pair whose rejected response has the larger S is swapped;
ties keep the pair's own label (`scalarized.ties="keep"`) or are dropped ("drop"). Rows keep a
`scalarized: {chosen, rejected, swapped}` record. The objectives still index the data (balanced
batches, per-objective metrics), but one head learns the scalarised preference.
"""
from __future__ import annotations

from typing import Mapping, Sequence

from mtalign_jax.training import pair_scores, task_preference


def scalarize(rows: Sequence[dict], weights: Mapping[str, float], ties: str = "keep"
              ) -> tuple[list[dict], int, int]:
    """(relabelled rows, number swapped, number of ties dropped).

    Every row must have scores for each objective with weight > 0 (else KeyError naming it).
    """
    if ties not in ("keep", "drop"):
        raise ValueError(f"scalarized.ties must be 'keep' or 'drop', got {ties!r}")
    out, swapped, dropped = [], 0, 0
    for r in rows:
        sc = sr = 0.0
        for o, w in weights.items():
            if w == 0:
                continue
            s = pair_scores.row_scores(r, o)
            if s is None:
                raise KeyError(o)
            sc, sr = sc + w * s[0], sr + w * s[1]
        if sc == sr and ties == "drop":
            dropped += 1
            continue
        flip = sr > sc
        new_c, new_r = (sr, sc) if flip else (sc, sr)
        r = dict(r, scalarized={"chosen": new_c, "rejected": new_r, "swapped": flip})
        if flip:
            swapped += 1
            r["chosen"], r["rejected"] = r["rejected"], r["chosen"]
            r["scores"] = {o: [v[1], v[0]] if isinstance(v, (list, tuple)) and len(v) == 2
                           else v for o, v in r["scores"].items()}
        out.append(r)
    return out, swapped, dropped


class ScalarizedTask(task_preference.PreferenceTask):
    """PreferenceTask (one head) on re-labelled pairs."""

    def load_data(self, workdir: str) -> dict:
        cfg = self.config
        data = task_preference.load_preference_data(cfg)
        weights = pair_scores.parse_weights(cfg.scalarized.weights, "scalarized.weights")
        if sum(weights.values()) <= 0:
            raise ValueError(f"scalarized.weights={cfg.scalarized.weights!r}: all weights are 0")
        needed = [o for o, w in weights.items() if w > 0]
        for s in ("train", "eval"):
            for obj in data["objectives"]:
                rows = pair_scores.with_synthetic_scores(data[s][obj], list(weights))
                try:
                    rows, n_swap, n_drop = scalarize(rows, weights, cfg.scalarized.ties)
                except KeyError as e:
                    o = e.args[0]
                    raise pair_scores.missing_metadata_error(
                        cfg.data.files, obj, lambda r: all(
                            pair_scores.row_scores(r, x) is not None for x in needed),
                        f"no score for objective {o!r}: scalarised DPO needs 'scores': "
                        f"{{objective: [chosen, rejected]}} for {', '.join(needed)}",
                        "scores") from None
                if not rows and s == "train":
                    raise ValueError(f"scalarized: every training pair of {obj!r} is a tie "
                                     f"under weights {weights} and ties='drop'")
                if s == "train":
                    print(f"[scalarized] {obj}: {n_swap} of {len(rows) + n_drop} pairs "
                          f"re-labelled, {n_drop} ties dropped", flush=True)
                data[s][obj] = rows
        return data
