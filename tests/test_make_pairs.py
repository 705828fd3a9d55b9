"""make_pairs: best-vs-worst pairs with chosen score always above rejected, ties dropped and
counted; the tiny-model run writes pairs in the DESIGN.md format and resumes from its samples."""
import importlib.util
import json
import os

import pytest

from mtalign_jax.make_pairs import pairs_from_scores, run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(**over):
    path = os.path.join(ROOT, "configs", "make_pairs_arithmetic.py")
    spec = importlib.util.spec_from_file_location("make_pairs_arithmetic", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config("tiny")
    for k, v in over.items():
        c[k] = v
    return c


def test_pairs_from_scores_rule():
    ex = [{"prompt": "a", "answer": 1}, {"prompt": "b"}, {"prompt": "c"}, {"prompt": "d"}]
    resp = [["x", "y", "z"], ["p", "q", "r"], ["s", "s", "t"], ["u", "v", "w"]]
    scores = [[0.0, 2.0, 1.0], [1.0, 1.0, 1.0], [3.0, 3.0, 0.0], [5.0, 5.0 + 1e-9, 5.0]]
    pairs, stats = pairs_from_scores(ex, resp, scores, objective="accuracy", tie_eps=1e-6)
    assert stats == {"prompts": 4, "pairs": 2, "ties": 2}
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("y", "x"), ("s", "t")]
    assert pairs[0]["answer"] == 1 and pairs[0]["objective"] == "accuracy"
    with pytest.raises(ValueError, match="2 response lists"):
        pairs_from_scores(ex, resp[:2], scores, objective="accuracy")


def _grader(example, response):
    """Deterministic: the number of vowels in the response, mod 3 (many ties, many pairs)."""
    return float(sum(ch in "aeiou" for ch in response) % 3)


def test_tiny_model_pairs_ordered_and_ties_counted(tmp_path):
    c = _config()
    stats = run(c, str(tmp_path), grader=_grader)
    with open(tmp_path / "pairs_accuracy.jsonl") as f:
        pairs = [json.loads(line) for line in f]
    with open(tmp_path / "samples.jsonl") as f:
        samples = [json.loads(line) for line in f]
    assert len(samples) == c.data.num_prompts
    assert all(len(s["responses"]) == c.samples_per_prompt for s in samples)
    assert stats["pairs"] == len(pairs) and stats["pairs"] + stats["ties"] == c.data.num_prompts
    expected_ties = sum(max(s["scores"]) == min(s["scores"]) for s in samples)
    assert stats["ties"] == expected_ties
    assert pairs, "the vowel grader should separate some samples"
    for p in pairs:
        assert p["chosen_score"] > p["rejected_score"]
        assert p["chosen_score"] == _grader(p, p["chosen"])
        assert p["rejected_score"] == _grader(p, p["rejected"])
        assert {"prompt", "chosen", "rejected", "answer"} <= set(p)
    # A rerun finds every prompt sampled and rewrites the same pairs without sampling.
    mtime = os.path.getmtime(tmp_path / "samples.jsonl")
    again = run(c, str(tmp_path), grader=_grader)
    assert again["pairs"] == stats["pairs"] and again["ties"] == stats["ties"]
    assert os.path.getmtime(tmp_path / "samples.jsonl") == mtime
