"""MATH-500: the 500-problem test subset of MATH (Hendrycks et al.) used to evaluate math accuracy.

Source: `HuggingFaceH4/MATH-500` (the PRM800K test split of MATH), one JSON object per line with
`problem`, `solution`, `answer`, `subject`, `level` (int) and `unique_id` (optional here).
Licence: MIT (MATH dataset).
Offline copy: `../shared/data/math500.jsonl` beside the project root. Point at your own file with
`load_source("math500", path="/path/to/math500.jsonl")` (or `test.jsonl` of MATH-500); a file of
the full MATH test set in the same JSONL shape works too.

Example fields: `prompt` (the problem), `solution` (reference solution), `steps` (the solution
cut by `segment_math`), `answer`, `subject`, `level`, `unique_id`. One split: `test`.
"""
from __future__ import annotations

import pathlib

from mtalign_jax.data.segment import segment_math
from mtalign_jax.data.sources import _io
from mtalign_jax.data.sources._builder import SourceBuilder, shared_data_dir


class Math500(SourceBuilder, skip_registration=True):
    """MATH-500 problems with reference solutions and answers."""

    FIELDS = {"prompt": "text", "solution": "text", "steps": "text_list", "answer": "text",
              "subject": "text", "level": "int", "unique_id": "text"}
    SPLITS = {"test": 1.0}
    HOMEPAGE = "https://huggingface.co/datasets/HuggingFaceH4/MATH-500"
    LICENSE = "MIT"
    CITATION = ("Hendrycks et al., Measuring Mathematical Problem Solving With the MATH "
                "Dataset, 2021")

    @classmethod
    def default_path(cls) -> pathlib.Path:
        return shared_data_dir() / "math500.jsonl"

    @classmethod
    def read(cls, path=None, **options) -> list[dict]:
        path = path or cls.default_path()
        examples = []
        for line, row in _io.read_jsonl(path):
            solution = _io.get(row, "solution", str, path, line)
            level = _io.get(row, "level", (int, str), path, line)
            if isinstance(level, str):  # MATH itself writes "Level 3".
                digits = level.removeprefix("Level ").strip()
                if not digits.isdigit():
                    _io.fail(path, line, f"expected an integer level, got {level!r}", "level")
                level = int(digits)
            examples.append({
                "prompt": _io.get(row, "problem", str, path, line),
                "solution": solution,
                "steps": segment_math(solution),
                "answer": _io.get(row, "answer", str, path, line),
                "subject": _io.get(row, "subject", str, path, line),
                "level": level,
                "unique_id": _io.get(row, "unique_id", str, path, line, optional=True) or "",
            })
        return examples
