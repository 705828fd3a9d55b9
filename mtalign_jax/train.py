"""Training entry point for every task (sft, mahdpo, dpo baselines, rm, prm, value, ...).

    python -m mtalign_jax.train --config configs/NAME.py[:VARIANT] --workdir DIR \
        [--config.a.b=value ...]

Re-running the same command on a DIR that holds a checkpoint resumes it.
"""
from __future__ import annotations

import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file[:variant].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (metrics, checkpoints).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    from mtalign_jax.training.loop import run

    run(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    sys.exit(app.run(main))
