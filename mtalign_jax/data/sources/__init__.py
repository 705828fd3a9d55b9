"""Data sources of the paper's three domains (math, human values, tutoring): TF-less tfds builders.

`SOURCES` maps a source name to its builder class (a `tfds.core.GeneratorBasedBuilder` written to
ArrayRecord, see `_builder.py`); `load_source(name, path=None, split="all")` builds it once
(cached under `$MTALIGN_DATA_DIR`, default `~/.cache/mtalign_jax/tfds`) and returns its examples
as a list of dicts. `path` is the user's real file (default: the offline location named in each
module's docstring, which also gives the source, licence and format). Each builder's `read(path)`
is the plain reader behind it. Malformed files raise ValueError whose last line reads
`FILE:LINE: field 'NAME': what is wrong`.

| name                   | what                                                   | offline    |
|------------------------|--------------------------------------------------------|------------|
| math500                | MATH-500 problems, solutions, answers                  | 500        |
| gsm8k                  | GSM8K test problems with step solutions                | 1,319      |
| champ                  | CHAMP problems with step-segmented solutions           | 270        |
| champ_fws              | CHAMP model solutions with first-wrong-step labels     | 540        |
| chitchat               | human-rated chit-chat conversations                    | 5,988      |
| chitchat_engagement    | engagement pairs from the ratings (same opening prefix)| derived    |
| socratic_mind          | Socratic Mind tutoring accuracy pairs                  | 1,000      |
| ultrafeedback          | UltraFeedback best-vs-worst pairs per dimension        | user file  |
| ultrafeedback_conflict | UltraFeedback helpfulness/honesty conflict subset      | user file  |
| prm800k                | PRM800K step-labelled traces                           | user file  |
| arithmetic             | generated arithmetic word problems (seeded)            | generated  |

Splits are disjoint by prompt (hash of the prompt text) and deterministic; `split_parts` cuts a
split into named disjoint parts by prompt.
"""
from __future__ import annotations

from mtalign_jax.data.sources._builder import SourceBuilder, load, make_builder
from mtalign_jax.data.sources.arithmetic import Arithmetic
from mtalign_jax.data.sources.champ import Champ, ChampFws
from mtalign_jax.data.sources.chitchat import Chitchat, ChitchatEngagement
from mtalign_jax.data.sources.gsm8k import Gsm8k
from mtalign_jax.data.sources.math500 import Math500
from mtalign_jax.data.sources.prm800k import Prm800k
from mtalign_jax.data.sources.socratic_mind import SocraticMind
from mtalign_jax.data.sources.splits import prompt_of, split_by_prompt, split_parts
from mtalign_jax.data.sources.ultrafeedback import UltraFeedback, UltraFeedbackConflict

SOURCES: dict[str, type[SourceBuilder]] = {
    "math500": Math500,
    "gsm8k": Gsm8k,
    "champ": Champ,
    "champ_fws": ChampFws,
    "chitchat": Chitchat,
    "chitchat_engagement": ChitchatEngagement,
    "socratic_mind": SocraticMind,
    "ultrafeedback": UltraFeedback,
    "ultrafeedback_conflict": UltraFeedbackConflict,
    "prm800k": Prm800k,
    "arithmetic": Arithmetic,
}


def get_source(name: str) -> type[SourceBuilder]:
    """The builder class of source `name`."""
    if name not in SOURCES:
        raise ValueError(f"unknown source {name!r}; known: {', '.join(SOURCES)}")
    return SOURCES[name]


def load_source(name: str, path=None, split: str = "all", *, data_dir=None,
                **options) -> list[dict]:
    """Examples of source `name` read from `path` (default: its offline location).

    split: a split name of the source (`test` for math500/gsm8k; `train`, `validation`, `test`
    for the others), several joined by "+", or "all" (file order). `options` go to the reader
    (e.g. `margin=` for chitchat_engagement, `n=`, `seed=` for arithmetic).
    """
    return load(get_source(name), path, split, data_dir, **options)


def read_source(name: str, path=None, **options) -> list[dict]:
    """The same examples, read directly from the file without building (no cache, no splits)."""
    cls = get_source(name)
    return cls.read(path, **{**cls.DEFAULT_OPTIONS, **options})


__all__ = ["SOURCES", "get_source", "load_source", "read_source", "make_builder",
           "split_parts", "split_by_prompt", "prompt_of"]
