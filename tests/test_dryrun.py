"""Paper-scale dry run on 64 fake CPU devices: the 7B and 8B configs build their sharded
abstract train state and every large leaf is sharded."""
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("config,params_b", [("configs/mahdpo_math.py:paper", 8.16),
                                             ("configs/mahdpo_hv.py:paper", 9.08)])
def test_paper_dryrun_64_devices(config, params_b):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run([sys.executable, "-m", "mtalign_jax.dryrun", "--config", config,
                           "--devices", "64"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "every parameter leaf above the threshold is sharded" in out
    n = float(re.search(r"([\d.]+)B params", out).group(1))
    assert abs(n - params_b) < 0.05, out
    per_dev = float(re.search(r"params ([\d.]+) GiB", out).group(1))
    assert per_dev < 1.0, out  # 8B float32 master weights over 64 devices


def test_dryrun_flags_replication():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run([sys.executable, "-m", "mtalign_jax.dryrun", "--config",
                           "configs/mahdpo_math.py:paper", "--devices", "8",
                           "--config.mesh.rules=data_parallel", "--config.mesh.shape=(8,1,1)"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    assert "fully replicated" in proc.stderr
