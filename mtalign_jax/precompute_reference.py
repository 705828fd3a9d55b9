"""Precompute the reference model's log-probs of every pair once, into the workdir.

    python -m mtalign_jax.precompute_reference --config configs/mahdpo_math.py:tiny --workdir W

Writes W/reference_logps.npz (per split and objective: [N, 2] summed response log-probs of
chosen and rejected, float32) with a fingerprint of the data and reference model; training with
`loss.reference="precomputed"` reuses it and never runs the reference model again. Nothing is
ever written beside the input data.
"""
from __future__ import annotations

import os
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Preference config file[:variant].")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    from mtalign_jax.training import task_preference

    config = _CONFIG.value
    data = task_preference.load_preference_data(config)
    os.makedirs(_WORKDIR.value, exist_ok=True)
    from mtalign_jax.hf.load import tokenizer_for

    tok = tokenizer_for(config.model.get("reference", "") or config.model.name)
    table = task_preference.reference_table(config, data, _WORKDIR.value, tok)
    path = os.path.join(_WORKDIR.value, task_preference.REFERENCE_FILE)
    for split, per in table.items():
        for obj, arr in per.items():
            print(f"{split}/{obj}: {arr.shape[0]} pairs, mean chosen {arr[:, 0].mean():.3f}, "
                  f"mean rejected {arr[:, 1].mean():.3f}")
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(app.run(main))
