"""CHAMP: Concept and Hint-Augmented Math Problems (Mao, Kim, Zhou 2024).

270 competition-level problems with step-segmented reference solutions, and 540 model-written
solutions (GPT-3.5, GPT-4, GPT-4 Turbo, PaLM 2 Medium under two prompt settings) whose first
wrong step (FWS) was annotated by hand, which we turn into step labels.

Source: the `champ-dataset` PyPI package (`champ_dataset/dataset_files/v0.json`, found with
`importlib.util.find_spec`), a JSON object `{"problems": {ID: problem}, "concepts", "hints"}`.
A problem has `identifier`, `_raw_text` (math marked with `@@`, removed here), `category`,
`solution.steps[]._raw_text`, `_raw_answer`, and `fws_annotations` {"MODEL|PROMPT": {`text`,
`start_idx`, `end_idx` (character span of the first wrong step, both null when there is no
mistake), `author`}}. Licence: MIT. Homepage: https://yujunmao1.github.io/CHAMP/.
Point at your own copy with `load_source("champ", path="/path/to/v0.json")`.

Sources:
- `champ`: one example per problem: `id`, `prompt`, `category`, `steps`, `solution` (the steps
  joined by blank lines, so `segment_math(solution) == steps`), `answer`.
- `champ_fws`: one example per annotated solution: `id`, `prompt`, `response`, `steps`
  (`segment_math(response)`), `step_labels` (1 = correct, 0 = the first wrong step, -100 = after
  it, unlabelled), `first_wrong_step` (step index, -1 when the solution has no mistake),
  `model`, `setting`, `answer` (the gold answer).
"""
from __future__ import annotations

import pathlib

from mtalign_jax.data.segment import segment_math
from mtalign_jax.data.sources import _io
from mtalign_jax.data.sources._builder import SourceBuilder
from mtalign_jax.data.sources.gsm8k import package_file

IGNORE = -100


def _plain(raw: str, path, line, field: str) -> str:
    if raw.count("@@") % 2:
        _io.fail(path, line, "odd number of '@@' math markers", field)
    return raw.replace("@@", "")


def _problems(path):
    """Yields (problem id, problem dict, line locator) for each problem of the file."""
    data, text = _io.read_json(path)
    problems = _io.get(data, "problems", dict, path, 1)
    for pid, problem in problems.items():
        where = lambda *keys, pid=pid: _io.line_of_key(text, "problems", pid, *keys)  # noqa: E731
        if not isinstance(problem, dict):
            _io.fail(path, where, f"expected an object, got {type(problem).__name__}",
                     f"problems.{pid}")
        yield pid, problem, where


def _problem_fields(pid, problem, where, path) -> dict:
    at = lambda *keys: lambda: where(*keys)  # noqa: E731 (line numbers only on errors)
    get = lambda field, types: _io.get(problem, field, types, path, at(field))  # noqa: E731
    prompt = _plain(get("_raw_text", str), path, at("_raw_text"), "_raw_text")
    answer = _plain(get("_raw_answer", str), path, at("_raw_answer"), "_raw_answer")
    solution = get("solution", dict)
    steps = _io.get(solution, "steps", list, path, at("solution"), name="solution.steps")
    texts = []
    for i, step in enumerate(steps):
        name = f"solution.steps[{i}]._raw_text"
        raw = _io.get(step, "_raw_text", str, path, at("solution", "steps"), name=name)
        texts.append(_plain(raw, path, at("solution", "steps"), name).strip())
    return {"id": pid, "prompt": prompt, "category": get("category", str), "steps": texts,
            "answer": answer}


def first_wrong_step(steps: list[str], start_idx: int) -> int:
    """Index of the step holding character `start_idx` of `"".join(steps)`."""
    end = 0
    for i, step in enumerate(steps):
        end += len(step)
        if start_idx < end:
            return i
    return len(steps) - 1


class Champ(SourceBuilder, skip_registration=True):
    """CHAMP problems with step-segmented reference solutions."""

    FIELDS = {"id": "text", "prompt": "text", "category": "text", "steps": "text_list",
              "solution": "text", "answer": "text"}
    HOMEPAGE = "https://yujunmao1.github.io/CHAMP/"
    LICENSE = "MIT"
    CITATION = ("Mao, Kim, Zhou, CHAMP: A Competition-level Dataset for Fine-Grained Analyses "
                "of LLMs' Mathematical Reasoning Capabilities, 2024")

    @classmethod
    def default_path(cls) -> pathlib.Path:
        return package_file("champ_dataset", "dataset_files/v0.json")

    @classmethod
    def read(cls, path=None, **options) -> list[dict]:
        path = path or cls.default_path()
        examples = []
        for pid, problem, where in _problems(path):
            fields = _problem_fields(pid, problem, where, path)
            steps = fields["steps"]
            fields["steps"] = [s + "\n\n" for s in steps[:-1]] + steps[-1:]
            fields["solution"] = "".join(fields["steps"])
            examples.append(fields)
        return examples


class ChampFws(SourceBuilder, skip_registration=True):
    """CHAMP model solutions with first-wrong-step labels, as step-labelled traces."""

    FIELDS = {"id": "text", "prompt": "text", "response": "text", "steps": "text_list",
              "step_labels": "int_list", "first_wrong_step": "int", "model": "text",
              "setting": "text", "answer": "text"}
    HOMEPAGE = Champ.HOMEPAGE
    LICENSE = Champ.LICENSE
    CITATION = Champ.CITATION

    @classmethod
    def default_path(cls) -> pathlib.Path:
        return Champ.default_path()

    @classmethod
    def read(cls, path=None, **options) -> list[dict]:
        path = path or cls.default_path()
        examples = []
        for pid, problem, where in _problems(path):
            fields = _problem_fields(pid, problem, where, path)
            annotations = _io.get(problem, "fws_annotations", dict, path,
                                  lambda: where("fws_annotations"))
            for key, ann in annotations.items():
                line = lambda key=key: where("fws_annotations", key)  # noqa: E731
                name = f"fws_annotations.{key}"
                text = _io.get(ann, "text", str, path, line, name=f"{name}.text")
                start = _io.get(ann, "start_idx", int, path, line, name=f"{name}.start_idx",
                                optional=True)
                end = _io.get(ann, "end_idx", int, path, line, name=f"{name}.end_idx",
                              optional=True)
                if (start is None) != (end is None) or (
                        start is not None and not 0 <= start <= end <= len(text)):
                    _io.fail(path, line, f"bad span start_idx={start} end_idx={end} for a text "
                             f"of {len(text)} characters", f"{name}.start_idx")
                steps = segment_math(text)
                wrong = -1 if start is None else first_wrong_step(steps, start)
                labels = [1 if wrong < 0 or i < wrong else 0 if i == wrong else IGNORE
                          for i in range(len(steps))]
                model, _, setting = key.partition("|")
                examples.append({
                    "id": f"{pid}|{key}", "prompt": fields["prompt"], "response": text,
                    "steps": steps, "step_labels": labels, "first_wrong_step": wrong,
                    "model": _io.get(ann, "author", str, path, line, name=f"{name}.author",
                                     optional=True) or model,
                    "setting": setting, "answer": fields["answer"]})
        return examples
