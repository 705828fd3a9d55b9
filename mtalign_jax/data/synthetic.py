"""SYNTHETIC data for tiny runs and tests: small arithmetic SFT rows and preference pairs.

Every row carries `"synthetic": True` so it can never pass for real data. The rules are simple
enough for a tiny model to learn in a few hundred steps:

- SFT: "What is 3+4?" -> "3+4=7."
- Preferences, per objective (unknown names fall back to the "accuracy" rule):
  - "accuracy" (and "helpfulness", "truthfulness", "honesty"): chosen states the right sum,
    rejected a wrong one, in the same words.
  - "engagement": both state the right sum; chosen adds an enthusiastic follow-up question
    ending in "!", rejected is the flat statement.
  With conflict=True the objectives share their prompts and prefer opposite responses: the
  "accuracy"-type objectives prefer the flat correct statement over a wrong but enthusiastic
  one, "engagement" the reverse.
"""
from __future__ import annotations

import json
import os
from typing import Iterable, Sequence

import numpy as np

ENGAGING = ("Want to try a harder one?!", "Shall we do another one together!",
            "Can you guess what comes next!")


def _problem(rng: np.random.Generator) -> tuple[int, int, int]:
    a, b = (int(x) for x in rng.integers(0, 50, size=2))
    return a, b, a + b


def _wrong(rng: np.random.Generator, s: int) -> int:
    return s + int(rng.choice([-3, -2, -1, 1, 2, 3]))


def synthetic_sft(n: int, seed: int = 0) -> list[dict]:
    """n SYNTHETIC arithmetic rows {prompt, response, synthetic}."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(int(n)):
        a, b, s = _problem(rng)
        rows.append({"prompt": f"What is {a}+{b}?", "response": f"{a}+{b}={s}.",
                     "synthetic": True})
    return rows


def _pair(objective: str, a: int, b: int, s: int, w: int, tail: str, conflict: bool):
    right, wrong = f"{a}+{b}={s}.", f"{a}+{b}={w}."
    if objective == "engagement":
        if conflict:
            return f"{wrong} {tail}", right
        return f"{right} {tail}", right
    if conflict:
        return right, f"{wrong} {tail}"
    return right, wrong


def synthetic_preferences(objectives: Sequence[str], n: int, seed: int = 0,
                          conflict: bool = False) -> list[dict]:
    """n SYNTHETIC pairs per objective: rows {prompt, chosen, rejected, objective, synthetic}.

    With conflict=True every objective gets the same n prompts (and the same wrong answers);
    otherwise each objective draws its own prompts.
    """
    rows = []
    shared = np.random.default_rng(seed)
    problems = [_problem(shared) for _ in range(int(n))] if conflict else None
    for j, objective in enumerate(objectives):
        rng = np.random.default_rng([seed, j])
        for t in range(int(n)):
            a, b, s = problems[t] if conflict else _problem(rng)
            w = _wrong(np.random.default_rng([seed, t, a, b]) if conflict else rng, s)
            tail = ENGAGING[(a + b) % len(ENGAGING)]
            chosen, rejected = _pair(objective, a, b, s, w, tail, conflict)
            rows.append({"prompt": f"What is {a}+{b}?", "chosen": chosen, "rejected": rejected,
                         "objective": objective, "synthetic": True})
    return rows


def write_jsonl(rows: Iterable[dict], path: str) -> str:
    """Writes rows as JSONL (UTF-8, one object a line); returns the path."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path
