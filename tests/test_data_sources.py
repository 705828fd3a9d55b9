"""Data sources: fixtures in each real format, the real offline sources, errors, splits, cards."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

from mtalign_jax.data.sources import (SOURCES, load_source, read_source, split_by_prompt,
                                      split_parts)
from mtalign_jax.data.sources import arithmetic, chitchat, ultrafeedback
from mtalign_jax.eval.grading import grade_exact_int

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """One tfds cache for the module, so each real source is built once."""
    return str(tmp_path_factory.mktemp("tfds"))


def write_jsonl(path: pathlib.Path, rows) -> pathlib.Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def last_line(excinfo) -> str:
    return str(excinfo.value).splitlines()[-1]


# ----------------------------------------------------------------------------- real sources


@pytest.mark.parametrize("name, size", [("math500", 500), ("gsm8k", 1319), ("champ", 270),
                                        ("champ_fws", 540), ("chitchat", 5988),
                                        ("socratic_mind", 1000)])
def test_real_offline_sources_build_with_known_sizes(name, size, data_dir, shared_dir):
    examples = load_source(name, data_dir=data_dir)
    assert len(examples) == size
    assert set(examples[0]) == set(SOURCES[name].FIELDS)
    # The tfds (ArrayRecord) round trip returns exactly what the plain reader parses.
    assert examples == read_source(name)


def test_real_source_contents(data_dir, shared_dir):
    math = load_source("math500", data_dir=data_dir, split="test")
    assert len(math) == 500 and {e["level"] for e in math} == {1, 2, 3, 4, 5}
    assert all("".join(e["steps"]) == e["solution"] for e in math)
    gsm = read_source("gsm8k")
    assert gsm[0]["answer"] == "18" and all(e["answer"].lstrip("-").isdigit() for e in gsm)
    assert not any("<<" in s for e in gsm for s in e["steps"])
    fws = read_source("champ_fws")
    assert sum(e["first_wrong_step"] < 0 for e in fws) == 96  # "No mistake" annotations.
    for e in fws:
        wrong = e["first_wrong_step"]
        assert len(e["step_labels"]) == len(e["steps"]) and "".join(e["steps"]) == e["response"]
        if wrong >= 0:
            assert e["step_labels"][:wrong + 1] == [1] * wrong + [0]
            assert set(e["step_labels"][wrong + 1:]) <= {-100}
    convs = read_source("chitchat")
    assert len({c["prompt"] for c in convs}) == 35
    assert all(1 <= v <= 10 for c in convs for v in c["ratings"].values())
    pairs = chitchat.engagement_pairs(convs, margin=2.0)
    assert len(pairs) == 1800
    assert all(p["chosen_score"] - p["rejected_score"] >= 2.0 for p in pairs)
    used = [p["chosen_id"] for p in pairs] + [p["rejected_id"] for p in pairs]
    assert len(used) == len(set(used))  # each conversation in at most one pair
    sm = read_source("socratic_mind")
    assert {p["objective"] for p in sm} == {"accuracy"}
    assert all(p["prompt"].endswith("Assistant:") for p in sm)
    assert sm[0]["metadata"]["num_candidates"] == 5


# ----------------------------------------------------------------------------- fixtures

MATH_ROWS = [
    {"problem": "What is $1+1$?", "solution": "We add.\n\nSo $1+1=\\boxed{2}$.", "answer": "2",
     "subject": "Prealgebra", "level": 1, "unique_id": "test/prealgebra/1.json"},
    {"problem": "What is $2\\cdot 3$?", "solution": "$2\\cdot 3 = \\boxed{6}$.", "answer": "6",
     "subject": "Prealgebra", "level": 2, "unique_id": "test/prealgebra/2.json"},
    {"problem": "Solve $x+1=0$.", "solution": "Subtract 1: $x=\\boxed{-1}$.", "answer": "-1",
     "subject": "Algebra", "level": "Level 3"},
]


def test_math500_fixture(tmp_path):
    path = write_jsonl(tmp_path / "math.jsonl", MATH_ROWS)
    examples = load_source("math500", path, data_dir=str(tmp_path / "tfds"))
    assert [e["answer"] for e in examples] == ["2", "6", "-1"]
    assert [e["level"] for e in examples] == [1, 2, 3]
    assert examples[0]["steps"] == ["We add.\n\n", "So $1+1=\\boxed{2}$."]
    assert examples[2]["unique_id"] == ""


def test_gsm8k_fixture(tmp_path):
    path = write_jsonl(tmp_path / "gsm.jsonl", [
        {"question": "Q1?", "answer": "It is 2*3=<<2*3=6>>6.\nThen 6+4=<<6+4=10>>10.\n#### 10"},
        {"question": "Q2?", "answer": "Total 1000+234=<<1000+234=1234>>1,234.\n#### 1,234"}])
    examples = load_source("gsm8k", path, data_dir=str(tmp_path / "tfds"))
    assert examples[0]["steps"] == ["It is 2*3=6.", "Then 6+4=10."]
    assert [e["answer"] for e in examples] == ["10", "1234"]


def champ_fixture(path: pathlib.Path, drop: str | None = None) -> pathlib.Path:
    text = "First we set up.\n\nThen 2+2=5.\n\nSo the answer is 5."
    problem = {
        "identifier": "P_Test_1", "_raw_text": "Compute @@2+2@@.", "_text": "Compute 2+2.",
        "category": "Test",
        "solution": {"steps": [{"_raw_text": "Add @@2+2=4@@.", "_text": "Add 2+2=4.",
                                "ch_idxs": []}, {"_raw_text": "Done.", "ch_idxs": [0]}]},
        "_raw_answer": "4", "_answer": "4", "ch_list": [],
        "fws_annotations": {
            "GPT-4|No C w/o H": {"text": text, "start_idx": text.index("Then"),
                                 "end_idx": text.index("5.\n"), "author": "GPT-4"},
            "GPT-3.5|No C w/o H": {"text": "2+2=4.\n\nAnswer 4.", "start_idx": None,
                                   "end_idx": None, "author": "GPT-3.5"}},
        "conversations": {}}
    if drop:
        del problem[drop]
    data = {"problems": {"P_Test_1": problem}, "concepts": {}, "hints": {}}
    path.write_text(json.dumps(data, indent=2))
    return path


def test_champ_fixture(tmp_path):
    path = champ_fixture(tmp_path / "v0.json")
    problems = load_source("champ", path, data_dir=str(tmp_path / "tfds"))
    assert len(problems) == 1
    assert problems[0]["prompt"] == "Compute 2+2." and problems[0]["answer"] == "4"
    assert problems[0]["steps"] == ["Add 2+2=4.\n\n", "Done."]
    fws = load_source("champ_fws", path, data_dir=str(tmp_path / "tfds"))
    assert [e["model"] for e in fws] == ["GPT-4", "GPT-3.5"]
    assert fws[0]["step_labels"] == [1, 0, -100] and fws[0]["first_wrong_step"] == 1
    assert fws[1]["step_labels"] == [1, 1] and fws[1]["first_wrong_step"] == -1
    assert fws[0]["setting"] == "No C w/o H"


def chitchat_fixture(path: pathlib.Path) -> pathlib.Path:
    def conv(topic, turns, rating):
        c = {"prompt": topic, "start": "2018-05-02T19:38:15Z",
             "messages": [[{"text": t, "sender": f"s{i % 2}", "timestamp": "x"}
                           for t in turn.split("|")] for i, turn in enumerate(turns)]}
        if rating is not None:
            c["ratings"] = {"interesting": rating, "witty": rating, "upbeat": rating}
        return c

    data = {"c1": conv("Favourite food?", ["Hi", "Hello|Pizza, with a story!"], 9),
            "c2": conv("Favourite food?", ["hi!", "meh"], 2),
            "c3": conv("Favourite food?", ["Hey", "ok"], 6),
            "c4": conv("Favourite food?", ["Yo"], None),
            "c5": conv("Weekend plans?", ["Sailing with my dad"], 8),
            "c6": conv("Weekend plans?", ["Nothing"], 7)}
    path.write_text(json.dumps(data))
    return path


def test_chitchat_fixture_conversations_and_pairs(tmp_path):
    path = chitchat_fixture(tmp_path / "dataset.json")
    convs = load_source("chitchat", path, data_dir=str(tmp_path / "tfds"))
    assert [c["id"] for c in convs] == ["c1", "c2", "c3", "c5", "c6"]  # c4 is unrated
    assert convs[0]["turns"] == ["Hi", "Hello\nPizza, with a story!"]
    assert convs[0]["engagement"] == 9.0
    pairs = load_source("chitchat_engagement", path, data_dir=str(tmp_path / "tfds"))
    # Favourite food: c1 (9) vs c2 (2) share the opening "Hi" (up to case/punctuation), so the
    # pair's prompt holds it and the targets are the second turns. Weekend plans: 8 vs 7 < margin.
    assert len(pairs) == 1
    p = pairs[0]
    assert (p["chosen"], p["rejected"], p["prefix_turns"]) == ("Hello\nPizza, with a story!",
                                                               "meh", 1)
    assert p["prompt"] == "Conversation starter: Favourite food?\n\nUser: Hi\n\nAssistant:"
    assert p["objective"] == "engagement" and p["chosen_score"] - p["rejected_score"] == 7
    assert len(chitchat.engagement_pairs(convs, margin=1.0)) == 2
    examples = chitchat.next_turn_examples(convs[0])
    assert [e["response"] for e in examples] == convs[0]["turns"]
    assert examples[1]["prompt"].endswith("User: Hi\n\nAssistant:")


def test_socratic_mind_fixture(tmp_path):
    rows = [{"question": f"Assistant: Q{i}?\n\nStudent: A{i}\n\nAssistant:", "chosen": f"good {i}",
             "rejected": f"bad {i}", "metadata": {"chosen_score": 0.9, "rejected_score": 0.1}}
            for i in range(3)]
    path = tmp_path / "sm.json"
    path.write_text(json.dumps(rows, indent=1))
    pairs = load_source("socratic_mind", path, data_dir=str(tmp_path / "tfds"))
    assert [p["chosen"] for p in pairs] == ["good 0", "good 1", "good 2"]
    assert pairs[1]["metadata"] == {"chosen_score": 0.9, "rejected_score": 0.1}
    assert {p["objective"] for p in pairs} == {"accuracy"}


def uf_completion(response, help_, honest, truth, follow="3"):
    def ann(r):
        return {"Rating": r, "Rationale": "because"}

    return {"response": response, "model": f"m-{response}", "principle": "helpfulness",
            "custom_system_prompt": "", "fine-grained_score": 3.5, "overall_score": 6.0,
            "critique": "ok", "annotations": {
                "helpfulness": {**ann(help_), "Rationale For Rating": "r", "Type": ["1"]},
                "honesty": ann(honest),
                "truthfulness": {**ann(truth), "Rationale For Rating": "r", "Type": ["0"]},
                "instruction_following": ann(follow)}}


UF_ROWS = [
    # Agreement: A is best and C worst on every dimension.
    {"source": "evol_instruct", "instruction": "P1", "models": ["a", "b", "c"],
     "completions": [uf_completion("A", "5", "5", "5"), uf_completion("B", "3", "4", "4"),
                     uf_completion("C", "1", "2", "2")]},
    # Conflict: helpfulness prefers A over C, honesty prefers C over A; truthfulness all tie.
    {"source": "sharegpt", "instruction": "P2", "models": ["a", "b", "c"],
     "completions": [uf_completion("A", "5", "1", "3"), uf_completion("B", "N/A", "3", "3"),
                     uf_completion("C", "2", "5", "3")]},
]


def test_ultrafeedback_fixture_pairs_and_conflict(tmp_path):
    path = write_jsonl(tmp_path / "uf.jsonl", UF_ROWS)
    pairs = load_source("ultrafeedback", path, data_dir=str(tmp_path / "tfds"))
    got = [(p["prompt"], p["objective"], p["chosen"], p["rejected"], p["conflict"]) for p in pairs]
    assert got == [("P1", "helpfulness", "A", "C", False), ("P1", "honesty", "A", "C", False),
                   ("P1", "truthfulness", "A", "C", False), ("P2", "helpfulness", "A", "C", True),
                   ("P2", "honesty", "C", "A", True)]  # P2 truthfulness: a tie, dropped
    assert pairs[3]["chosen_rating"] == 5 and pairs[3]["rejected_rating"] == 2
    assert pairs[0]["chosen_model"] == "m-A" and pairs[3]["source"] == "sharegpt"
    conflict = load_source("ultrafeedback_conflict", path, data_dir=str(tmp_path / "tfds"))
    assert [(p["prompt"], p["objective"]) for p in conflict] == [("P2", "helpfulness"),
                                                                  ("P2", "honesty")]
    rows = ultrafeedback.read_prompts(path)
    assert ultrafeedback.count_ties(rows) == {"helpfulness": 0, "honesty": 0, "truthfulness": 1}
    four = read_source("ultrafeedback", path, dimensions=list(ultrafeedback.ALL_DIMENSIONS))
    assert sum(p["objective"] == "instruction_following" for p in four) == 0  # all rated 3


def prm_step(completions, chosen=None, human=None):
    return {"completions": [{"text": t, "rating": r, "flagged": False} for t, r in completions],
            "human_completion": human, "chosen_completion": chosen}


PRM_ROWS = [
    {"labeler": "L1", "timestamp": "2023-01-01T00:00:00", "generation": 3,
     "is_quality_control_question": False, "is_initial_screening_question": False,
     "question": {"problem": "What is 2+3?", "ground_truth_answer": "5"},
     "label": {"steps": [prm_step([("2+3 is five.", 1)], chosen=0),
                         prm_step([("So 6.", -1), ("Hmm.", 0)])],
               "total_time": 1000, "finish_reason": "found_error"}},
    {"labeler": "L2", "timestamp": "2023-01-02T00:00:00", "generation": None,
     "is_quality_control_question": True, "is_initial_screening_question": False,
     "question": {"problem": "What is 1+1?", "ground_truth_answer": "2"},
     "label": {"steps": [prm_step([("Let me think.", 0)], chosen=0),
                         prm_step([("Maybe 3.", 0)], human={"text": "1+1=2.", "rating": None}),
                         prm_step([("# Answer\n\n2", 1)], chosen=0)],
               "total_time": 2000, "finish_reason": "solution"}},
]


def test_prm800k_fixture_traces(tmp_path):
    path = write_jsonl(tmp_path / "phase2_train.jsonl", PRM_ROWS)
    traces = load_source("prm800k", path, data_dir=str(tmp_path / "tfds"))
    assert len(traces) == 2
    a, b = traces
    assert a["steps"] == ["2+3 is five.", "So 6."] and a["step_ratings"] == [1, -1]
    assert a["step_labels"] == [1, 0] and a["finish_reason"] == "found_error"
    assert (a["id"], a["prompt"], a["answer"], a["generation"]) == (
        "L1/2023-01-01T00:00:00", "What is 2+3?", "5", 3)
    assert b["steps"] == ["Let me think.", "1+1=2.", "# Answer\n\n2"]
    assert b["step_ratings"] == [0, 1, 1] and b["step_sources"] == ["model", "human", "model"]
    assert b["quality_control"] is True and b["generation"] == 0


def test_arithmetic_generator_is_deterministic_and_exact():
    a = arithmetic.generate(50, seed=3, num_operands=4, max_value=50)
    assert a == arithmetic.generate(50, seed=3, num_operands=4, max_value=50)
    assert a[:10] == arithmetic.generate(10, seed=3, num_operands=4, max_value=50)
    assert a != arithmetic.generate(50, seed=4, num_operands=4, max_value=50)
    for e in a:
        assert eval(e["expression"].replace("/", "//")) == e["answer"] >= 0  # noqa: S307
        assert e["expression"].count("(") == 3  # 4 operands: 3 operations
        assert grade_exact_int(e["solution"], e["answer"])
        assert "".join(e["steps"]) == e["solution"]
    easy = arithmetic.generate(20, seed=0, num_operands=2, max_value=9)
    assert all(e["expression"].count("(") == 1 for e in easy)


def test_arithmetic_builder(tmp_path):
    examples = load_source("arithmetic", data_dir=str(tmp_path), n=30, seed=1)
    assert examples == arithmetic.generate(30, seed=1)
    with pytest.raises(ValueError, match="takes no path"):
        load_source("arithmetic", path=tmp_path / "x.jsonl", data_dir=str(tmp_path))


# ----------------------------------------------------------------------------- malformed input


def test_malformed_jsonl_names_file_line_and_field(tmp_path):
    rows = [dict(MATH_ROWS[0]), dict(MATH_ROWS[1])]
    del rows[1]["answer"]
    path = write_jsonl(tmp_path / "missing.jsonl", rows)
    with pytest.raises(ValueError) as e:
        load_source("math500", path, data_dir=str(tmp_path / "tfds"))  # through tfds too
    assert last_line(e) == f"{path}:2: field 'answer': missing"

    path = write_jsonl(tmp_path / "broken.jsonl", [MATH_ROWS[0], MATH_ROWS[1], '{"problem": "x",'])
    with pytest.raises(ValueError) as e:
        read_source("math500", path)
    assert last_line(e).startswith(f"{path}:3: broken JSON")

    path = write_jsonl(tmp_path / "type.jsonl", [MATH_ROWS[0], {**MATH_ROWS[1], "problem": 7}])
    with pytest.raises(ValueError) as e:
        read_source("math500", path)
    assert last_line(e) == f"{path}:2: field 'problem': expected a string, got int"

    path = write_jsonl(tmp_path / "gsm.jsonl", [{"question": "q", "answer": "no final line"}])
    with pytest.raises(ValueError) as e:
        read_source("gsm8k", path)
    assert last_line(e) == f"{path}:1: field 'answer': no '#### <answer>' line"


def test_malformed_nested_fields(tmp_path):
    bad = json.loads(json.dumps(UF_ROWS))
    bad[1]["completions"][2]["annotations"]["honesty"]["Rating"] = 5
    path = write_jsonl(tmp_path / "uf.jsonl", bad)
    with pytest.raises(ValueError) as e:
        read_source("ultrafeedback", path)
    assert last_line(e) == (f"{path}:2: field 'completions[2].annotations.honesty.Rating': "
                            "expected a string, got int")

    bad = json.loads(json.dumps(PRM_ROWS))
    bad[0]["label"]["steps"][1]["completions"][0]["rating"] = 2
    path = write_jsonl(tmp_path / "prm.jsonl", bad)
    with pytest.raises(ValueError) as e:
        read_source("prm800k", path)
    assert last_line(e) == (f"{path}:1: field 'label.steps[1].completions[0].rating': "
                            "expected -1, 0, 1 or null, got 2")

    rows = [{"question": "q1", "chosen": "a", "rejected": "b"},
            {"question": "q2", "chosen": "a"}]
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps(rows, indent=2))  # the second object starts on line 7
    with pytest.raises(ValueError) as e:
        read_source("socratic_mind", path)
    assert last_line(e) == f"{path}:7: field 'rejected': missing"

    path = champ_fixture(tmp_path / "v0.json", drop="_raw_answer")
    line = path.read_text().splitlines().index('    "P_Test_1": {') + 1
    with pytest.raises(ValueError) as e:
        read_source("champ", path)
    assert last_line(e) == f"{path}:{line}: field '_raw_answer': missing"

    path = tmp_path / "empty.jsonl"
    path.write_text("")
    with pytest.raises(ValueError) as e:
        read_source("math500", path)
    assert last_line(e) == f"{path}:1: file is empty"


# ----------------------------------------------------------------------------- splits


def test_splits_are_deterministic_and_disjoint_by_prompt(data_dir):
    kwargs = dict(data_dir=data_dir, n=400, seed=0, num_operands=2, max_value=5)
    splits = {s: load_source("arithmetic", split=s, **kwargs)
              for s in ("train", "validation", "test")}
    prompts = {s: {e["prompt"] for e in ex} for s, ex in splits.items()}
    assert not prompts["train"] & prompts["validation"]
    assert not prompts["train"] & prompts["test"]
    assert not prompts["validation"] & prompts["test"]
    everything = load_source("arithmetic", **kwargs)
    assert sum(len(v) for v in splits.values()) == len(everything) == 400
    # Small numbers make repeated prompts: they must land in one split together.
    assert len({e["prompt"] for e in everything}) < 400
    assert 0.7 < len(splits["train"]) / 400 < 0.9
    again = split_by_prompt(list(reversed(everything)), {"train": 0.8, "validation": 0.1,
                                                          "test": 0.1}, salt="split")
    assert {e["id"] for e in again["test"]} == {e["id"] for e in splits["test"]}
    assert load_source("arithmetic", split="train+test", **kwargs) == sorted(
        splits["train"] + splits["test"], key=everything.index)


def test_split_parts_disjoint_and_seeded():
    examples = arithmetic.generate(600, seed=2)
    fractions = {"labeller": 0.33, "guide": 0.33, "judge": 0.34}
    parts = split_parts(examples, fractions, seed=0)
    assert list(parts) == ["labeller", "guide", "judge"]
    sets = [{e["prompt"] for e in p} for p in parts.values()]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert sum(len(p) for p in parts.values()) == 600
    assert all(150 < len(p) < 250 for p in parts.values())
    assert split_parts(examples, fractions, seed=0) == parts
    assert split_parts(examples, fractions, seed=1) != parts
    with pytest.raises(ValueError, match="sum to 1"):
        split_parts(examples, {"a": 0.5, "b": 0.2})


# ----------------------------------------------------------------------------- data cards


def run_stats(*args, data_dir):
    env = {**os.environ, "MTALIGN_DATA_DIR": data_dir}
    out = subprocess.run([sys.executable, "-m", "mtalign_jax.data.stats", *args], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.splitlines()


def test_stats_cli_prints_count_first(data_dir, shared_dir):
    lines = run_stats("math500", data_dir=data_dir)
    assert lines[0] == "math500: 500 examples"
    assert "  licence: MIT" in lines and "  splits (disjoint by prompt): test 500" in lines
    assert any(line.startswith("  length of solution (whitespace tokens)") for line in lines)


def test_stats_cli_on_pair_file(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": "p1", "chosen": "a b c", "rejected": "a", "objective": "accuracy"},
        {"question": "p2", "chosen": "x", "rejected": "x y", "objective": "engagement"},
        {"prompt": "p3", "chosen": "same", "rejected": "same", "objective": "accuracy"}])
    lines = run_stats(str(path), data_dir=str(tmp_path / "tfds"))
    assert lines[0] == f"{path}: 3 examples"
    assert any(line.split()[:3] == ["accuracy", "2", "(66.7%)"] for line in lines)
    assert any(line.split()[:3] == ["engagement", "1", "(33.3%)"] for line in lines)
    assert "  pairs: 1 with chosen == rejected; chosen longer than rejected in 1 (33.3%)" in lines
