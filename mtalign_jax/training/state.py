"""TrainState: everything a resumed run needs besides the data iterator (a pure pytree)."""
from __future__ import annotations

from typing import Any

import flax.struct
import jax


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # [] int32, number of updates applied
    params: Any  # the trainable model's parameter tree
    opt_state: Any
    rng: jax.Array  # root PRNG key; the step's key is fold_in(rng, step)
    skipped: jax.Array  # [] int32, updates skipped for non-finite loss/gradients
