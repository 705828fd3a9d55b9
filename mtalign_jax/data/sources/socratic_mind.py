"""Socratic Mind tutoring preference pairs (accuracy objective), from the paper's tutoring domain.

1,000 real pairs from multi-turn tutoring dialogues on beginner programming (Socratic Mind
platform, Georgia Tech). Each row is the dialogue so far ("Assistant: ...\\n\\nStudent: ...
\\n\\nAssistant:") and two candidate tutor turns written by gpt-4o, ranked by an accuracy reward
model (`metadata.rm_model`) among `num_candidates` samples: the best is `chosen`, the worst
`rejected`; `metadata` keeps `original_id`, `cut_index`, `rating`, `model`, `rm_model`,
`num_candidates`, `chosen_score`, `rejected_score`, `chosen_index`, `rejected_index`,
`all_scores`.

Source: the paper's `prm_guided_decoding/sm_acc.json`; offline copy
`../shared/data/socratic_mind_accuracy_pairs.json` (a JSON list of objects `question`,
`chosen`, `rejected`, `metadata`). Licence: Apache-2.0.
Point at your own file with `load_source("socratic_mind", path="/path/to/pairs.json")`; a JSONL
file of the same objects works too, and `prompt` is accepted in place of `question`.

Example fields: `prompt`, `chosen`, `rejected`, `objective` ("accuracy" unless the row names
one), `metadata` (the row's metadata object). This is the DESIGN.md §4 pair format.
"""
from __future__ import annotations

import pathlib

from mtalign_jax.data.sources import _io
from mtalign_jax.data.sources._builder import SourceBuilder, shared_data_dir


def read_pairs(path, default_objective: str = "accuracy") -> list[dict]:
    """Preference pairs from a JSON list or JSONL file of {prompt|question, chosen, rejected}."""
    p = _io.check_file(path)
    with open(p, encoding="utf-8") as f:
        head = f.read(4096).lstrip()
    rows = _io.read_json_array(p) if head.startswith("[") else _io.read_jsonl(p)
    pairs = []
    for line, row in rows:
        if not isinstance(row, dict):
            _io.fail(p, line, f"expected an object, got {type(row).__name__}")
        key = "prompt" if "prompt" in row else "question"
        pair = {"prompt": _io.get(row, key, str, p, line),
                "chosen": _io.get(row, "chosen", str, p, line),
                "rejected": _io.get(row, "rejected", str, p, line),
                "objective": _io.get(row, "objective", str, p, line, optional=True)
                or default_objective,
                "metadata": _io.get(row, "metadata", dict, p, line, optional=True) or {}}
        pairs.append(pair)
    return pairs


class SocraticMind(SourceBuilder, skip_registration=True):
    """Socratic Mind tutoring accuracy pairs."""

    FIELDS = {"prompt": "text", "chosen": "text", "rejected": "text", "objective": "text",
              "metadata": "json"}
    HOMEPAGE = "https://socraticmind.com"
    LICENSE = "Apache-2.0"
    CITATION = "Simultaneous Multi-objective Alignment Across Verifiable and Non-verifiable Rewards"

    @classmethod
    def default_path(cls) -> pathlib.Path:
        return shared_data_dir() / "socratic_mind_accuracy_pairs.json"

    @classmethod
    def read(cls, path=None, **options) -> list[dict]:
        return read_pairs(path or cls.default_path(), **options)
