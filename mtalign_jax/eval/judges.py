"""Reward-model judges for non-verifiable objectives (PAPER.md sections 2.3, 5.3).

A judge is a trained RM / classifier (`eval/scoring.py`) that scores a response; its verdict
is `score >= threshold`. Every judge records which model plays which role (`role`: "labeler"
for step labels, "judge" for evaluation, "guide" for decoding), and `check_roles` refuses to let
one model both guide decoding and judge the result (the official code's pitfall, DESIGN.md 6).

Before a judge labels anything it is calibrated against held-out human ratings (case A's first
step): `calibrate` picks the threshold that best reproduces the binarised human labels on a
calibration part and reports, on a disjoint report part (or the same data when none is given):
  accuracy   fraction of responses where judge verdict == human label
  agreement  Cohen's kappa of the two binary labellings (agreement beyond chance)
  auroc      AUROC of the judge's scores against the human labels
  spearman   rank correlation of the judge's scores with the raw human ratings
"""
from __future__ import annotations

import dataclasses
import json
from typing import Optional, Sequence

import numpy as np

from mtalign_jax.eval import scoring

ROLES = ("labeler", "judge", "guide")


@dataclasses.dataclass
class Judge:
    """An RM playing a role for one objective."""

    rm: scoring.RewardModel
    objective: str
    role: str = "judge"
    threshold: Optional[float] = None  # set by `calibrate`
    calibration: Optional[dict] = None

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"judge role {self.role!r} is not one of {ROLES}")

    @property
    def name(self) -> str:
        return self.rm.source or f"<in-memory {self.rm.kind}>"

    def scores(self, prompts: Sequence, responses: Sequence[str]) -> np.ndarray:
        """Judge scores [N] (the RM's final score of each full response)."""
        obj = self.objective if self.rm.conditioned else None
        return scoring.score_texts(self.rm, prompts, responses, objective=obj)

    def verdicts(self, prompts: Sequence, responses: Sequence[str], *,
                 allow_uncalibrated: bool = False) -> np.ndarray:
        """Binary verdicts [N] bool (score >= threshold). A judge must be calibrated first."""
        if self.threshold is None:
            if not allow_uncalibrated:
                raise RuntimeError(f"judge {self.name} ({self.objective}) is not calibrated: "
                                   f"run calibrate() on held-out human ratings before labelling")
            thr = 0.5 if self.rm.transform != "identity" else 0.0
        else:
            thr = self.threshold
        return self.scores(prompts, responses) >= thr

    def record(self) -> dict:
        """Who played what: written beside any labels or evaluation the judge produced."""
        return {"model": self.name, "kind": self.rm.kind, "objective": self.objective,
                "role": self.role, "threshold": self.threshold, "calibration": self.calibration}


def cohen_kappa(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's kappa of two binary labellings [N]."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    po = float(np.mean(a == b))
    pe = float(np.mean(a) * np.mean(b) + np.mean(~a) * np.mean(~b))
    return float("nan") if pe == 1.0 else (po - pe) / (1.0 - pe)


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The threshold (midpoint between sorted scores) maximising accuracy of score >= t."""
    s = np.sort(np.unique(np.asarray(scores, np.float64)))
    cands = np.concatenate([[s[0] - 1.0], (s[:-1] + s[1:]) / 2, [s[-1] + 1.0]])
    y = np.asarray(labels, bool)
    acc = [np.mean((scores >= t) == y) for t in cands]
    return float(cands[int(np.argmax(acc))])


def agreement_metrics(scores: np.ndarray, verdicts: np.ndarray, human_labels: np.ndarray,
                      human_ratings: Optional[np.ndarray] = None) -> dict:
    """accuracy, agreement (kappa), auroc and spearman of a judge against human labels."""
    from mtalign_jax.training.task_reward import auroc, spearman

    y = np.asarray(human_labels, bool)
    out = {"n": int(len(y)), "accuracy": float(np.mean(np.asarray(verdicts, bool) == y)),
           "agreement": cohen_kappa(verdicts, y), "auroc": auroc(scores, y)}
    if human_ratings is not None:
        out["spearman"] = spearman(scores, human_ratings)
    return out


def calibrate(judge: Judge, prompts: Sequence, responses: Sequence[str],
              human_ratings: Sequence[float], *, human_threshold: float,
              report: Optional[tuple] = None) -> dict:
    """Calibrate `judge` on held-out human ratings (rating >= human_threshold = positive).

    Sets `judge.threshold` (best accuracy on this calibration data) and returns the metrics of
    the module docstring, measured on `report` = (prompts, responses, ratings) when given (a
    part disjoint from the calibration part), else on the calibration data itself.
    """
    ratings = np.asarray(human_ratings, np.float64)
    labels = ratings >= human_threshold
    scores = judge.scores(prompts, responses)
    judge.threshold = best_threshold(scores, labels)
    if report is not None:
        rp, rr, rh = report
        rh = np.asarray(rh, np.float64)
        scores, labels, ratings = judge.scores(rp, rr), rh >= human_threshold, rh
    metrics = agreement_metrics(scores, scores >= judge.threshold, labels, ratings)
    metrics.update(threshold=judge.threshold, human_threshold=float(human_threshold),
                   measured_on="report" if report is not None else "calibration")
    judge.calibration = metrics
    return metrics


def check_roles(judges: Sequence[Judge]) -> None:
    """Raise if one model is both a guide and a judge (the same-model evaluation pitfall)."""
    by_model: dict[str, set] = {}
    for j in judges:
        by_model.setdefault(j.name, set()).add(j.role)
    both = [m for m, roles in by_model.items() if {"guide", "judge"} <= roles]
    if both:
        raise ValueError(f"model(s) {', '.join(both)} both guide decoding and judge it: use a "
                         f"separate evaluation RM (or pass the guide only as a guide)")


def write_roles(path: str, judges: Sequence[Judge]) -> None:
    """JSON file recording which model played which role."""
    with open(path, "w") as f:
        json.dump([j.record() for j in judges], f, indent=2)
