"""Every experiment script (experiments/) in smoke mode, in-process, sharing one run cache.

Smoke = the `tiny` preset on SYNTHETIC pairs, 1 seed, 2 steps. The scripts share trained runs
through the cache (e.g. main_table's MAH-DPO run is reused by synergy and loss_ablations) and
JAX's persistent compilation cache in it. Each test checks that the .md/.csv/.png exist, that
the CSV has exactly the expected (row, metric) cells and that every number in it is finite.
"""
import csv
import math

import numpy as np
import pytest

OBJ = ["accuracy", "engagement"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("experiment_runs")


def _smoke(module, runs, tmp_path, *extra):
    import importlib

    mod = importlib.import_module(f"experiments.{module}")
    out = mod.main(["--scale", "smoke", "--out", str(tmp_path / module), "--runs", str(runs),
                    *extra])
    return out


def _check(paths, rows, metrics):
    """Files exist; CSV cells == rows x metrics (or the given set of pairs); numbers finite."""
    for kind in ("md", "csv", "png"):
        with open(paths[kind], "rb") as f:
            head = f.read(8)
        assert head, f"{paths[kind]} is empty"
    with open(paths["png"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(paths["csv"]) as f:
        table = list(csv.reader(f))
    assert table[0] == ["row", "metric", "mean", "ci95", "n"]
    cells = {(r[0], r[1]): r for r in table[1:]}
    want = {(r, m) for r in rows for m in metrics} if metrics is not None else set(rows)
    assert set(cells) == want
    assert len(table) - 1 == len(want)
    for r, m in want:
        mean, ci, n = float(cells[(r, m)][2]), float(cells[(r, m)][3]), int(cells[(r, m)][4])
        assert math.isfinite(mean) and math.isfinite(ci), (r, m, cells[(r, m)])
        assert n == 1 and ci == 0.0  # smoke: one seed, no interval
    md = open(paths["md"]).read()
    for r in {r for r, _ in want}:
        assert f"| {r} |" in md
    return cells


def test_mean_ci_and_pref_accuracy():
    from experiments import common

    m, h = common.mean_ci([1.0, 2.0, 3.0])
    assert m == pytest.approx(2.0)
    assert h == pytest.approx(4.302652729911275 * 1.0 / math.sqrt(3), rel=1e-9)  # t(0.975, 2)
    assert common.mean_ci([0.25]) == (0.25, 0.0)
    ref = np.array([[-5.0, -6.0], [-4.0, -4.0], [-3.0, -1.0]])
    logps = np.stack([ref, ref + np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])])  # [2, 3, 2]
    acc = common.pref_accuracy(logps, ref)
    np.testing.assert_allclose(acc, [0.5, 0.5])  # all ties; right, wrong, tie
    assert common.parse_seeds("3", 1) == [0, 1, 2] and common.parse_seeds("4,7", 1) == [4, 7]


def test_missing_demo_pairs_is_a_clear_error(tmp_path, monkeypatch):
    from experiments import main_table

    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="make demo"):
        main_table.main(["--scale", "mini", "--runs", str(tmp_path / "r")])


@pytest.mark.slow
def test_main_table_smoke(runs, tmp_path):
    rows = ["base", "sft", "dpo_single/accuracy", "dpo_single/engagement", "dpo_mixed",
            "dpo_scalarized", "dpo_modpo", "dpo_soup", "mahdpo (ensemble)",
            "mahdpo (head accuracy)", "mahdpo (head engagement)"]
    cells = _check(_smoke("main_table", runs, tmp_path), rows, OBJ)
    assert float(cells[("base", "accuracy")][2]) == 0.5  # the reference against itself


@pytest.mark.slow
def test_guided_table_smoke(runs, tmp_path):
    rows = ["sample"] + [f"{m} ({g})" for m in ("best_of_n", "guided")
                         for g in ("accuracy guide", "engagement guide", "both guides 0.5/0.5")]
    cells = _check(_smoke("guided_table", runs, tmp_path), rows, OBJ)
    for r in rows:
        assert 0.0 <= float(cells[(r, "accuracy")][2]) <= 1.0
        assert 0.0 < float(cells[(r, "engagement")][2]) < 1.0  # sigmoid of a BT judge


@pytest.mark.slow
def test_synergy_smoke(runs, tmp_path):
    pols = ["base", "mahdpo w=(1,0)", "mahdpo w=(0.5,0.5)", "mahdpo w=(0,1)"]
    rows = [f"{p} {d}" for p in pols
            for d in ("sample", "+ accuracy guide", "+ engagement guide")]
    _check(_smoke("synergy", runs, tmp_path), rows, OBJ)


@pytest.mark.slow
def test_conflict_subset_smoke(runs, tmp_path):
    rows = ["single-head DPO (pooled)", "MAH-DPO (ensemble)", "MAH-DPO (head accuracy)",
            "MAH-DPO (head engagement)"]
    _check(_smoke("conflict_subset", runs, tmp_path), rows, OBJ)


@pytest.mark.slow
def test_num_heads_smoke(runs, tmp_path):
    five = ["accuracy", "engagement", "helpfulness", "honesty", "truthfulness"]
    want = set()
    for k in (2, 3, 5):
        for kind in ("own head", "ensemble"):
            want |= {(f"{k} heads ({kind})", m) for m in five[:k] + ["mean"]}
    _check(_smoke("num_heads", runs, tmp_path), want, None)


@pytest.mark.slow
def test_loss_ablations_smoke(runs, tmp_path):
    from experiments.loss_ablations import variants
    from experiments.common import load_config

    assert len(variants(load_config("mahdpo_math", "tiny"))) == 10
    # a subset (each variant compiles its own step; the losses themselves are unit-tested)
    rows = ["default", "ipo", "reference_free"]
    metrics = ([f"{o} (own head)" for o in OBJ] + [f"{o} (ensemble)" for o in OBJ]
               + ["train loss"])
    cells = _check(_smoke("loss_ablations", runs, tmp_path, "--only", ",".join(rows)), rows,
                   metrics)
    assert float(cells[("ipo", "train loss")][2]) != float(cells[("default", "train loss")][2])


def test_demo_pair_files_are_scored_on_their_heldout_siblings(tmp_path):
    """`common.heldout_rows`: `DIR/pairs_<o>.jsonl` with a `DIR/heldout_<o>.jsonl` beside it (what
    the demo writes) is scored on the sibling; without one, or for another file name, on the
    file's own held-out split (`split_rows`). SYNTHETIC rows."""
    from experiments import common

    rows = common.synthetic_rows(OBJ, 40)
    cfg = common.load_config("mahdpo_math", "mini")
    pairs = common.write_jsonl(rows["accuracy"], str(tmp_path / "pairs_accuracy.jsonl"))
    own = common.split_rows(pairs, "accuracy", cfg)[1]
    assert 0 < len(own) < 40
    assert common.heldout_rows(pairs, "accuracy", cfg) == own
    common.write_jsonl(rows["accuracy"][:7], str(tmp_path / "heldout_accuracy.jsonl"))
    held = common.heldout_rows(pairs, "accuracy", cfg)
    assert [r["chosen"] for r in held] == [r["chosen"] for r in rows["accuracy"][:7]]
    other = common.write_jsonl(rows["accuracy"], str(tmp_path / "mine.jsonl"))
    assert common.heldout_rows(other, "accuracy", cfg) == common.split_rows(other, "accuracy",
                                                                             cfg)[1]


def test_conflict_subset_builds_train_and_heldout_conflicts_from_disjoint_files(tmp_path):
    """conflict_subset mini: a pair enters the subset when the engagement scores prefer its
    rejected answer, once per objective with the engagement pair swapped; the training
    conflicts come from every pair of a demo pair file and the held-out ones from its
    `heldout_accuracy.jsonl` sibling (else from the file's own split). SYNTHETIC rows."""
    from experiments import common
    from experiments.conflict_subset import conflicting, offline_sources

    rows = common.synthetic_rows(OBJ, 40)["accuracy"]
    got = conflicting(rows[:4], [0.0, 1.0, 2.0, -1.0], [1.0, 0.5, 2.0, 3.0])
    assert [r["chosen"] for r in got["accuracy"]] == [rows[0]["chosen"], rows[3]["chosen"]]
    assert [r["chosen"] for r in got["engagement"]] == [rows[0]["rejected"], rows[3]["rejected"]]
    assert [r["rejected"] for r in got["engagement"]] == [rows[0]["chosen"], rows[3]["chosen"]]
    assert {r["objective"] for r in got["engagement"]} == {"engagement"}
    assert all(r["prompt"] == s["prompt"] for r, s in zip(got["engagement"], got["accuracy"]))

    cfg = common.load_config("mahdpo_math", "mini")
    pairs = common.write_jsonl(rows[:30], str(tmp_path / "pairs_accuracy.jsonl"))
    train, held = offline_sources(pairs, cfg)
    assert (train, held) == common.split_rows(pairs, "accuracy", cfg)
    common.write_jsonl(rows[30:], str(tmp_path / "heldout_accuracy.jsonl"))
    train, held = offline_sources(pairs, cfg)
    assert [r["chosen"] for r in train] == [r["chosen"] for r in rows[:30]]
    assert [r["chosen"] for r in held] == [r["chosen"] for r in rows[30:]]


def test_run_cache_key_follows_the_data_files_contents(tmp_path):
    """`common.train` reuses a finished run only for the same data: its key holds a digest of
    the contents of the `data.files` it names (a file rewritten under the same path, as the
    experiments do with their derived pair files, must not reuse a run trained on the old one)."""
    from experiments.common import _data_digest

    a = tmp_path / "pairs_accuracy.jsonl"
    a.write_text('{"x": 1}\n')
    spec = f"accuracy:{a}"
    first = _data_digest(spec)
    assert first and first == _data_digest(spec)
    a.write_text('{"x": 2}\n')
    assert _data_digest(spec) != first
    assert _data_digest(str(a)) == _data_digest(spec)
    assert _data_digest("") == ""
