"""PRM800K: human step-level labels on model solutions to MATH problems (Lightman et al. 2023).

Source: `openai/prm800k` (`prm800k/data/phase{1,2}_{train,test}.jsonl`). Licence: MIT. Not
available offline: point at your file with
`load_source("prm800k", path="/path/to/phase2_train.jsonl")`.

Published shape, one labelled trace per line: `labeler`, `timestamp`, `generation`,
`is_quality_control_question`, `is_initial_screening_question`, `question` {`problem`,
`ground_truth_answer`, ...}, `label` {`steps`: [{`completions`: [{`text`, `rating` (-1, 0, 1 or
null), `flagged`}], `human_completion` (null or {`text`, ...}), `chosen_completion` (index or
null)}], `total_time`, `finish_reason` ("solution", "found_error", "give_up", "bad_problem")}.

Trace (the path the labeller followed): at each step take the chosen completion with its rating.
A step with no chosen completion ends the trace: its first completion rated -1 is kept as the
final (wrong) step when there is one (the "found_error" case); otherwise, when a human wrote the
step, the human text is kept with rating 1 and the trace goes on. A chosen completion with no
rating ends the trace before it.

Example fields: `id` (`labeler/timestamp`), `prompt`, `answer` (ground truth), `steps`,
`step_ratings` (-1/0/1), `step_labels` (1 when the rating is >= 0, as PRM800K counts neutral
steps as not wrong; 0 when -1), `step_sources` ("model" or "human"), `finish_reason`,
`generation`, `quality_control`, `initial_screening`.
"""
from __future__ import annotations

import pathlib

from mtalign_jax.data.sources import _io
from mtalign_jax.data.sources._builder import SourceBuilder


def _trace(steps: list, path, line) -> tuple[list[str], list[int], list[str]]:
    texts, ratings, sources = [], [], []

    def add(text: str, rating: int, source: str):
        texts.append(text)
        ratings.append(rating)
        sources.append(source)

    for s, step in enumerate(steps):
        name = f"label.steps[{s}]"
        completions = _io.get(step, "completions", list, path, line, name=f"{name}.completions")
        parsed = []
        for c, comp in enumerate(completions):
            cname = f"{name}.completions[{c}]"
            text = _io.get(comp, "text", str, path, line, name=f"{cname}.text")
            rating = _io.get(comp, "rating", int, path, line, name=f"{cname}.rating", optional=True)
            if rating not in (None, -1, 0, 1):
                _io.fail(path, line, f"expected -1, 0, 1 or null, got {rating}", f"{cname}.rating")
            parsed.append((text, rating))
        chosen = _io.get(step, "chosen_completion", int, path, line,
                         name=f"{name}.chosen_completion", optional=True)
        human = _io.get(step, "human_completion", (dict, str), path, line,
                        name=f"{name}.human_completion", optional=True)
        if chosen is not None:
            if not 0 <= chosen < len(parsed):
                _io.fail(path, line, f"index {chosen} outside {len(parsed)} completions",
                         f"{name}.chosen_completion")
            text, rating = parsed[chosen]
            if rating is None:
                break
            add(text, rating, "model")
            continue
        wrong = [text for text, rating in parsed if rating == -1]
        if wrong:
            add(wrong[0], -1, "model")
            break
        if human is None:
            break
        text = human if isinstance(human, str) else _io.get(
            human, "text", str, path, line, name=f"{name}.human_completion.text")
        add(text, 1, "human")
    return texts, ratings, sources


def read_traces(path) -> list[dict]:
    """Step-labelled traces of a PRM800K JSONL file (module doc)."""
    traces = []
    for line, row in _io.read_jsonl(path):
        question = _io.get(row, "question", dict, path, line)
        label = _io.get(row, "label", dict, path, line)
        steps = _io.get(label, "steps", list, path, line, name="label.steps")
        texts, ratings, sources = _trace(steps, path, line)
        answer = _io.get(question, "ground_truth_answer", str, path, line,
                         name="question.ground_truth_answer", optional=True) or ""
        traces.append({
            "id": f"{_io.get(row, 'labeler', str, path, line)}/"
                  f"{_io.get(row, 'timestamp', str, path, line)}",
            "prompt": _io.get(question, "problem", str, path, line, name="question.problem"),
            "answer": answer, "steps": texts, "step_ratings": ratings,
            "step_labels": [int(r >= 0) for r in ratings], "step_sources": sources,
            "finish_reason": _io.get(label, "finish_reason", str, path, line,
                                     name="label.finish_reason", optional=True) or "",
            "generation": _io.get(row, "generation", int, path, line, optional=True) or 0,
            "quality_control": _io.get(row, "is_quality_control_question", bool, path, line,
                                       optional=True) or False,
            "initial_screening": _io.get(row, "is_initial_screening_question", bool, path, line,
                                         optional=True) or False})
    return traces


class Prm800k(SourceBuilder, skip_registration=True):
    """PRM800K step-labelled traces."""

    FIELDS = {"id": "text", "prompt": "text", "answer": "text", "steps": "text_list",
              "step_ratings": "int_list", "step_labels": "int_list", "step_sources": "text_list",
              "finish_reason": "text", "generation": "int", "quality_control": "bool",
              "initial_screening": "bool"}
    HOMEPAGE = "https://github.com/openai/prm800k"
    LICENSE = "MIT"
    CITATION = "Lightman et al., Let's Verify Step by Step, 2023"

    @classmethod
    def default_path(cls) -> pathlib.Path:
        return pathlib.Path("prm800k/data/phase2_train.jsonl")  # Not shipped: users pass theirs.

    @classmethod
    def read(cls, path=None, **options) -> list[dict]:
        return read_traces(path or cls.default_path())
