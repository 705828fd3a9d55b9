"""make_pairs: best-vs-worst pairs with chosen score always above rejected, ties dropped and
counted; the tiny-model run writes pairs in the DESIGN.md format and resumes from its samples."""
import importlib.util
import json
import os

import numpy as np
import pytest

from mtalign_jax.make_pairs import pairs_from_scores, run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(name: str, **over):
    """configs/NAME.py:tiny with the keys `over` replaced."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "configs",
                                                                     f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config("tiny")
    for k, v in over.items():
        c[k] = v
    return c


def _config(**over):
    return _load("make_pairs_arithmetic", **over)


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
    # a blank response is never a side: the best and worst non-blank ones pair; one left: a tie
    pairs, stats = pairs_from_scores(ex[:2], [["", "m", "n"], [" ", "o", ""]],
                                     [[-9.0, 1.0, 0.0], [5.0, 1.0, -5.0]], objective="engagement")
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("m", "n")]
    assert (pairs[0]["chosen_sample"], pairs[0]["rejected_sample"]) == (1, 2)
    assert stats == {"prompts": 2, "pairs": 1, "ties": 1}


def _grader(example, response):
    """Deterministic: the number of vowels in the response, mod 3 (many ties, many pairs)."""
    return float(sum(ch in "aeiou" for ch in response) % 3)


def _kept_scores(sample_row):
    """Scores of a prompt's non-blank responses (blank ones never form a pair)."""
    return [x for r, x in zip(sample_row["responses"], sample_row["scores"]) if r.strip()]


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
    expected_ties = sum(len(k) < 2 or max(k) == min(k) for k in map(_kept_scores, samples))
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


# ---------------------------------------------------------------------------------------------
# the reward-model grader (tutor engagement pairs)

def _tutor_config(**over):
    return _load("make_pairs_tutor_engagement", **over)


@pytest.fixture(scope="module")
def tiny_rm(tmp_path_factory):
    """A tiny engagement RM trained for a few steps (configs/rm_engagement.py:tiny)."""
    from mtalign_jax.training.loop import run as train

    c = _load("rm_engagement")
    c.total_steps = c.log_every = 3
    c.checkpoint_every = c.eval_every = 1000  # no eval pass: training alone, then the final save
    wd = tmp_path_factory.mktemp("rm_engagement")
    train(c, str(wd))
    return str(wd)


def test_rm_grader_pairs_chosen_has_higher_rm_score(tmp_path, tiny_rm):
    from mtalign_jax.eval.scoring import load_reward_model, score_texts

    c = _tutor_config(rm=tiny_rm)
    stats = run(c, str(tmp_path))
    with open(tmp_path / "samples.jsonl") as f:
        samples = [json.loads(line) for line in f]
    with open(tmp_path / "pairs_engagement.jsonl") as f:
        pairs = [json.loads(line) for line in f]
    assert len(samples) == c.data.num_prompts == stats["prompts"]
    assert stats["pairs"] == len(pairs) >= 1 and stats["pairs"] + stats["ties"] == len(samples)
    # Prompts: the real Socratic Mind dialogues' ends, under the tutor template.
    assert all(s["prompt"].startswith("You are a Socratic programming tutor.") and
               s["prompt"].endswith("Assistant:") for s in samples)
    rm = load_reward_model(tiny_rm)
    by_prompt = {s["prompt"]: s for s in samples}
    for p in pairs:
        assert p["objective"] == "engagement" and "source_metadata" in p
        assert p["chosen_score"] > p["rejected_score"] + c.tie_eps
        s = by_prompt[p["prompt"]]
        kept = _kept_scores(s)
        assert p["chosen_score"] == max(kept) and p["rejected_score"] == min(kept)
        # The stored scores are the RM's scores of (prompt, response).
        again = score_texts(rm, [p["prompt"]] * 2, [p["chosen"], p["rejected"]])
        np.testing.assert_allclose(again, [p["chosen_score"], p["rejected_score"]], rtol=1e-5,
                                   atol=1e-5)
    # The pairs file loads as the engagement objective's data (DESIGN.md section 4 format).
    from mtalign_jax.data import validate

    rows = validate.load_preference_file(str(tmp_path / "pairs_engagement.jsonl"), "engagement",
                                         objectives=["accuracy", "engagement"])
    assert len(rows) == len(pairs)


def test_rm_grader_missing_rm_is_a_clear_error(tmp_path):
    c = _tutor_config(rm=str(tmp_path / "no_rm"))
    with pytest.raises(FileNotFoundError) as e:
        run(c, str(tmp_path / "out"))
    assert "train it first with: python -m mtalign_jax.train --config " \
           "configs/rm_engagement.py:mini --workdir" in str(e.value)
    assert str(e.value).startswith(str(tmp_path / "no_rm"))
    assert not os.path.exists(tmp_path / "out" / "samples.jsonl")


def test_pair_fields_are_ours_not_the_source_rows():
    """A prompt row's own `objective` / `chosen_score` (e.g. a pair source's labels) never
    override the pair's: the objective made and the scores that formed the pair."""
    ex = [{"prompt": "a", "objective": "accuracy", "chosen_score": 9.0, "topic": "t"}]
    pairs, _ = pairs_from_scores(ex, [["x", "y"]], [[0.25, 0.75]], objective="engagement")
    assert (pairs[0]["objective"], pairs[0]["chosen_score"], pairs[0]["rejected_score"],
            pairs[0]["topic"]) == ("engagement", 0.75, 0.25, "t")
