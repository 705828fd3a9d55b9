"""Per-objective scores of preference pairs (metadata), objective-weight specs, and rule scores
for SYNTHETIC pairs. Used by the MODPO and scalarised-DPO baselines.

Metadata format: pair files keep unknown keys as metadata (data/validate.py), so a pair row may
carry, besides `prompt`, `chosen`, `rejected`:

    "scores":  {"accuracy": [1.0, 0.0], "engagement": [0.2, 0.9]}   # [score_chosen, score_rejected]
    "margins": {"engagement": -0.7}                                  # r(chosen) - r(rejected)

Scalarised DPO needs `scores` for every objective with a non-zero weight. MODPO needs only the
other objectives' margins: `margins[j]`, or else `scores[j][0] - scores[j][1]`.

SYNTHETIC pairs (rows with `"synthetic": true` from data/synthetic.py) get their scores from the
generator's own rules when they have none: accuracy-type objectives score 1 for the correct
sum "a+b=s." and 0 otherwise; "engagement" scores 1 for an enthusiastic follow-up and 0 otherwise.
"""
from __future__ import annotations

import re
from typing import Optional, Sequence

from mtalign_jax.data.synthetic import ENGAGING

_SUM = re.compile(r"What is (\d+)\+(\d+)\?")


def parse_weights(spec: str, field: str) -> dict[str, float]:
    """"accuracy:0.5,engagement:0.5" -> {"accuracy": 0.5, "engagement": 0.5} (spec order).

    Weights must be finite and >= 0, each objective named once; errors name `field`.
    """
    out: dict[str, float] = {}
    for item in str(spec).split(","):
        item = item.strip()
        name, sep, value = item.partition(":")
        if not item or not sep or not name.strip():
            raise ValueError(f"{field}={spec!r}: expected 'objective:weight,...', got {item!r}")
        name = name.strip()
        try:
            w = float(value)
        except ValueError:
            raise ValueError(f"{field}={spec!r}: weight of {name!r} is not a number: "
                             f"{value!r}") from None
        if not w >= 0 or w == float("inf"):
            raise ValueError(f"{field}={spec!r}: weight of {name!r} must be finite and >= 0")
        if name in out:
            raise ValueError(f"{field}={spec!r}: objective {name!r} named twice")
        out[name] = w
    return out


def synthetic_score(row: dict, objective: str, side: str) -> float:
    """Rule score (0 or 1) of row[side] for a SYNTHETIC arithmetic pair (module docstring)."""
    m = _SUM.search(row["prompt"] if isinstance(row["prompt"], str) else "")
    if m is None:
        raise ValueError(f"synthetic pair without an arithmetic prompt: {row['prompt']!r}")
    text = row[side]
    if objective == "engagement":
        return float(any(t in text for t in ENGAGING))
    a, b = int(m.group(1)), int(m.group(2))
    return float(f"{a}+{b}={a + b}." in text)


def with_synthetic_scores(rows: Sequence[dict], objectives: Sequence[str]) -> list[dict]:
    """Rows with `scores` filled from the rules for SYNTHETIC rows that have none."""
    out = []
    for r in rows:
        if r.get("synthetic") and "scores" not in r and "margins" not in r:
            r = dict(r, scores={o: [synthetic_score(r, o, "chosen"),
                                    synthetic_score(r, o, "rejected")] for o in objectives})
        out.append(r)
    return out


def _pair(v) -> Optional[tuple[float, float]]:
    if (isinstance(v, (list, tuple)) and len(v) == 2
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)):
        return float(v[0]), float(v[1])
    return None


def row_scores(row: dict, objective: str) -> Optional[tuple[float, float]]:
    """(score_chosen, score_rejected) of `objective`, or None when absent or malformed."""
    s = row.get("scores")
    return _pair(s.get(objective)) if isinstance(s, dict) else None


def row_margin(row: dict, objective: str) -> Optional[float]:
    """r(chosen) - r(rejected) of `objective` from `margins` or `scores`; None when absent."""
    m = row.get("margins")
    if isinstance(m, dict) and isinstance(m.get(objective), (int, float)) \
            and not isinstance(m.get(objective), bool):
        return float(m[objective])
    s = row_scores(row, objective)
    return None if s is None else s[0] - s[1]


def missing_metadata_error(files_spec: str, objective_of_file: Optional[str], check,
                           what: str, field: str) -> Exception:
    """The error for rows lacking metadata: a DataError `FILE:LINE: field ...` for the first
    bad row of the named files (`check(row) -> bool`), or a plain ValueError otherwise."""
    from mtalign_jax.data import validate

    if files_spec:
        for objective, path in validate.parse_files_spec(files_spec):
            if objective_of_file is not None and objective != objective_of_file:
                continue
            if path.startswith("source:"):  # a built-in source: no file lines to point at
                continue
            for line, obj in validate._read_objects(path, []):  # noqa: SLF001 (line numbers)
                if isinstance(obj, dict) and not check(obj):
                    return validate.DataError(path, line, what, field,
                                              context="pair metadata missing")
    return ValueError(what)
