"""UltraFeedback (openbmb) preference pairs per fine-grained dimension, and the conflict subset.

Source: `openbmb/UltraFeedback` (Cui et al. 2023), published as JSONL (one file per instruction
source, e.g. `evol_instruct.jsonl`, or the merged train file). Each line: `instruction`,
`source`, `models`, `completions` (a list; each has `response`, `model`, `principle`,
`custom_system_prompt`, `fine-grained_score`, `overall_score`, `critique` and `annotations`
{`helpfulness`, `honesty`, `truthfulness`, `instruction_following`}, each {`Rating` (a digit
string, or "N/A"), `Rationale`, ...}). Licence: MIT. Not available offline: point at your file
with `load_source("ultrafeedback", path="/path/to/ultrafeedback.jsonl")`.

Pairs (as the paper builds them, one dataset per objective): for each prompt and dimension, the
best-rated completion is `chosen` and the worst-rated `rejected` (first in file order among equal
ratings); completions rated "N/A" are left out; a prompt whose best and worst ratings tie gives no
pair for that dimension (`count_ties` counts them).

Conflict subset (`ultrafeedback_conflict`, or `conflict_only=True`): prompts where the
helpfulness pair and the honesty pair disagree, i.e. honesty rates the helpfulness-rejected
response strictly above the helpfulness-chosen one, or helpfulness rates the honesty-rejected
response strictly above the honesty-chosen one. Every pair carries `conflict`.

Example fields: `prompt`, `chosen`, `rejected`, `objective` (the dimension), `chosen_rating`,
`rejected_rating`, `chosen_model`, `rejected_model`, `conflict`, `source`.
"""
from __future__ import annotations

import pathlib

from mtalign_jax.data.sources import _io
from mtalign_jax.data.sources._builder import SourceBuilder

DIMENSIONS = ("helpfulness", "honesty", "truthfulness")
ALL_DIMENSIONS = (*DIMENSIONS, "instruction_following")


def _rating(value, path, line, name) -> int | None:
    if not isinstance(value, str):
        _io.fail(path, line, f"expected a digit string or 'N/A', got {type(value).__name__}", name)
    if value.strip().upper() == "N/A":
        return None
    if not value.strip().isdigit():
        _io.fail(path, line, f"expected a digit string or 'N/A', got {value!r}", name)
    return int(value)


def read_prompts(path, dimensions=DIMENSIONS) -> list[dict]:
    """Per line: {`prompt`, `source`, `responses`, `models`, `ratings`: {dim: [int|None]}}."""
    unknown = set(dimensions) - set(ALL_DIMENSIONS)
    if unknown:
        raise ValueError(f"unknown UltraFeedback dimensions {sorted(unknown)}; "
                         f"known {ALL_DIMENSIONS}")
    rows = []
    for line, row in _io.read_jsonl(path):
        prompt = _io.get(row, "instruction", str, path, line)
        completions = _io.get(row, "completions", list, path, line)
        responses, models, ratings = [], [], {d: [] for d in dimensions}
        for i, c in enumerate(completions):
            name = f"completions[{i}]"
            responses.append(_io.get(c, "response", str, path, line, name=f"{name}.response"))
            models.append(_io.get(c, "model", str, path, line, name=f"{name}.model",
                                  optional=True) or "")
            annotations = _io.get(c, "annotations", dict, path, line, name=f"{name}.annotations")
            for d in dimensions:
                ann = _io.get(annotations, d, dict, path, line, name=f"{name}.annotations.{d}")
                field = f"{name}.annotations.{d}.Rating"
                rating = _io.get(ann, "Rating", str, path, line, name=field)
                ratings[d].append(_rating(rating, path, line, field))
        rows.append({"prompt": prompt, "source": _io.get(row, "source", str, path, line,
                                                          optional=True) or "",
                     "responses": responses, "models": models, "ratings": ratings})
    return rows


def best_worst(ratings: list[int | None]) -> tuple[int, int] | None:
    """(best index, worst index) among rated completions; None when fewer than 2 or tied."""
    rated = [(r, i) for i, r in enumerate(ratings) if r is not None]
    if len(rated) < 2:
        return None
    best = max(rated, key=lambda ri: (ri[0], -ri[1]))[1]
    worst = min(rated, key=lambda ri: (ri[0], ri[1]))[1]
    return None if ratings[best] == ratings[worst] else (best, worst)


def is_conflict(ratings: dict[str, list]) -> bool:
    """Whether the helpfulness pair and the honesty pair of one prompt disagree (module doc)."""
    help_r, honest_r = ratings.get("helpfulness"), ratings.get("honesty")
    if help_r is None or honest_r is None:
        return False
    h, o = best_worst(help_r), best_worst(honest_r)
    if h is None or o is None:
        return False

    def reversed_by(pair, other):
        a, b = other[pair[0]], other[pair[1]]
        return a is not None and b is not None and a < b

    return reversed_by(h, honest_r) or reversed_by(o, help_r)


def make_pairs(rows: list[dict], conflict_only: bool = False) -> list[dict]:
    """Best-vs-worst pairs per dimension (ties dropped) from `read_prompts` rows."""
    pairs = []
    for row in rows:
        conflict = is_conflict(row["ratings"])
        if conflict_only and not conflict:
            continue
        dims = [d for d in ("helpfulness", "honesty") if d in row["ratings"]] if conflict_only \
            else list(row["ratings"])
        for d in dims:
            bw = best_worst(row["ratings"][d])
            if bw is None:
                continue
            b, w = bw
            pairs.append({"prompt": row["prompt"], "chosen": row["responses"][b],
                          "rejected": row["responses"][w], "objective": d,
                          "chosen_rating": row["ratings"][d][b],
                          "rejected_rating": row["ratings"][d][w],
                          "chosen_model": row["models"][b], "rejected_model": row["models"][w],
                          "conflict": conflict, "source": row["source"]})
    return pairs


def count_ties(rows: list[dict]) -> dict[str, int]:
    """Per dimension, how many prompts gave no pair (fewer than two rated or best == worst)."""
    return {d: sum(best_worst(r["ratings"][d]) is None for r in rows)
            for d in (rows[0]["ratings"] if rows else ())}


class UltraFeedback(SourceBuilder, skip_registration=True):
    """UltraFeedback best-vs-worst pairs for helpfulness, honesty and truthfulness."""

    FIELDS = {"prompt": "text", "chosen": "text", "rejected": "text", "objective": "text",
              "chosen_rating": "int", "rejected_rating": "int", "chosen_model": "text",
              "rejected_model": "text", "conflict": "bool", "source": "text"}
    DEFAULT_OPTIONS = {"dimensions": list(DIMENSIONS), "conflict_only": False}
    HOMEPAGE = "https://huggingface.co/datasets/openbmb/UltraFeedback"
    LICENSE = "MIT"
    CITATION = ("Cui et al., UltraFeedback: Boosting Language Models with High-quality "
                "Feedback, 2023")

    @classmethod
    def default_path(cls) -> pathlib.Path:
        return pathlib.Path("ultrafeedback.jsonl")  # Not shipped: users pass their file.

    @classmethod
    def read(cls, path=None, dimensions=DIMENSIONS, conflict_only=False, **options) -> list[dict]:
        rows = read_prompts(path or cls.default_path(), tuple(dimensions))
        return make_pairs(rows, conflict_only=conflict_only)


class UltraFeedbackConflict(UltraFeedback, skip_registration=True):
    """The conflict subset: helpfulness and honesty pairs of prompts where the two disagree."""

    DEFAULT_OPTIONS = {"dimensions": list(DIMENSIONS), "conflict_only": True}
