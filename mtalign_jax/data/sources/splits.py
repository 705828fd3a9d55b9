"""Deterministic splits that are disjoint by prompt.

An example goes to a split by a hash of its prompt text (SHA-256 of `salt + prompt`), never by
its position: the same prompt always lands in the same split, two examples sharing a prompt are
never separated, and the result does not depend on file order or on Python's hash seed.
`split_parts` cuts a split further into named disjoint parts, e.g. one part to train a labelling
RM, one for a guide RM and one for a judge RM.
"""
from __future__ import annotations

import hashlib
from typing import Callable, Mapping, Sequence


def prompt_of(example: Mapping) -> str:
    """The prompt text of an example (`prompt`, else `question`)."""
    if "prompt" in example:
        return example["prompt"]
    if "question" in example:
        return example["question"]
    raise ValueError(f"example has neither 'prompt' nor 'question': keys {sorted(example)}")


def unit_hash(text: str, salt: str) -> float:
    """A number in [0, 1) fixed by `salt` and `text`."""
    digest = hashlib.sha256(f"{salt}\x00{text}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _check_fractions(fractions: Mapping[str, float]) -> list[tuple[str, float]]:
    if not fractions:
        raise ValueError("need at least one named part")
    items = list(fractions.items())
    if any(f < 0 for _, f in items) or abs(sum(f for _, f in items) - 1.0) > 1e-6:
        raise ValueError(f"fractions must be >= 0 and sum to 1, got {dict(fractions)}")
    return items


def assign(text: str, fractions: Mapping[str, float], salt: str) -> str:
    """The name whose cumulative fraction interval holds `unit_hash(text, salt)`."""
    items = _check_fractions(fractions)
    u = unit_hash(text, salt)
    total = 0.0
    for name, fraction in items:
        total += fraction
        if u < total:
            return name
    return items[-1][0]


def split_by_prompt(examples: Sequence[Mapping], fractions: Mapping[str, float], *,
                    salt: str = "split", key: Callable[[Mapping], str] = prompt_of
                    ) -> dict[str, list]:
    """Cuts `examples` into named parts by prompt hash; order within a part is kept."""
    _check_fractions(fractions)
    out = {name: [] for name in fractions}
    for example in examples:
        out[assign(key(example), fractions, salt)].append(example)
    return out


def split_parts(examples: Sequence[Mapping], parts: Mapping[str, float], seed: int = 0, *,
                key: Callable[[Mapping], str] = prompt_of) -> dict[str, list]:
    """Cuts a split into named disjoint parts by prompt, e.g.
    `split_parts(train, {"labeller": 0.33, "guide": 0.33, "judge": 0.34}, seed=0)`.

    A different `seed` gives a different (still deterministic) cut; the salt differs from the
    one the builders use for train/validation/test, so parts are balanced within any split.
    """
    return split_by_prompt(examples, parts, salt=f"parts/{seed}", key=key)
