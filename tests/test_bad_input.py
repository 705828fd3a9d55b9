"""Malformed data files fail through the real CLI, before training, naming file, line, field."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train(tmp_path, config, files, extra=()):
    workdir = tmp_path / "run"
    cmd = [sys.executable, "-m", "mtalign_jax.train", "--config", config,
           "--workdir", str(workdir), f"--config.data.files={files}", *extra]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    return proc, workdir


def _last_line(proc):
    lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
    return lines[-1] if lines else ""


GOOD = {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"}


def _write(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write(r if isinstance(r, str) else json.dumps(r))
            f.write("\n")
    return path


CASES = [
    ("missing_field", [GOOD, {"prompt": "x", "chosen": "y"}], 2, "rejected", "missing"),
    ("empty_text", [GOOD, GOOD, {"prompt": "x", "chosen": "", "rejected": "z"}], 3, "chosen",
     "empty"),
    ("wrong_type", [{"prompt": "x", "chosen": 3, "rejected": "z"}], 1, "chosen", "str"),
    ("broken_json", [GOOD, '{"prompt": "x", "chosen": '], 2, None, "JSON"),
]


@pytest.mark.parametrize("name,rows,line,field,words", CASES, ids=[c[0] for c in CASES])
def test_malformed_preference_file(tmp_path, name, rows, line, field, words):
    bad = _write(tmp_path / f"{name}.jsonl", rows)
    good = _write(tmp_path / "good.jsonl", [GOOD] * 4)
    proc, workdir = _train(tmp_path, "configs/mahdpo_math.py:tiny",
                           f"accuracy:{good},engagement:{bad}")
    assert proc.returncode != 0
    last = _last_line(proc)
    prefix = f"{bad}:{line}: " + (f"field '{field}': " if field else "")
    assert last.startswith(prefix), last
    assert words.lower() in last.lower(), last
    assert not (workdir / "checkpoints").exists()  # failed before any checkpoint dir was made


def test_non_utf8_bytes(tmp_path):
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(json.dumps(GOOD).encode() + b"\n" + b'{"prompt": "caf\xe9", "chosen": "a",'
                    b' "rejected": "b"}\n')
    good = _write(tmp_path / "good.jsonl", [GOOD] * 4)
    proc, _ = _train(tmp_path, "configs/mahdpo_math.py:tiny", f"accuracy:{good},engagement:{bad}")
    assert proc.returncode != 0
    assert _last_line(proc).startswith(f"{bad}:2: "), _last_line(proc)
    assert "utf-8" in _last_line(proc).lower()


def test_absent_and_empty_files(tmp_path):
    good = _write(tmp_path / "good.jsonl", [GOOD] * 4)
    absent = tmp_path / "nope.jsonl"
    proc, _ = _train(tmp_path, "configs/mahdpo_math.py:tiny",
                     f"accuracy:{good},engagement:{absent}")
    assert proc.returncode != 0 and _last_line(proc).startswith(f"{absent}:"), _last_line(proc)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    proc, _ = _train(tmp_path, "configs/mahdpo_math.py:tiny", f"accuracy:{good},engagement:{empty}")
    assert proc.returncode != 0 and _last_line(proc).startswith(f"{empty}:"), _last_line(proc)
    assert "empty" in _last_line(proc).lower()


def test_unknown_objective_name(tmp_path):
    good = _write(tmp_path / "good.jsonl", [GOOD] * 4)
    proc, _ = _train(tmp_path, "configs/mahdpo_math.py:tiny", f"accuracy:{good},humor:{good}")
    assert proc.returncode != 0
    last = _last_line(proc)
    assert str(good) in last and "humor" in last and "engagement" in last, last


def test_malformed_sft_file(tmp_path):
    bad = _write(tmp_path / "sft.jsonl", [{"prompt": "a", "response": "b"},
                                          {"messages": [{"role": "user"}]}])
    proc, _ = _train(tmp_path, "configs/sft.py:tiny", str(bad))
    assert proc.returncode != 0
    assert _last_line(proc).startswith(f"{bad}:2: field "), _last_line(proc)
