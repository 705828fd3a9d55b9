"""Data cards: `python -m mtalign_jax.data.stats NAME_OR_PATH [--split S] [--data_dir D]`.

NAME is a source of `mtalign_jax.data.sources.SOURCES` (math500, gsm8k, champ, champ_fws,
chitchat, chitchat_engagement, socratic_mind, arithmetic; ultrafeedback and prm800k with
`--path`); PATH is a preference-pair file (JSON list or JSONL of objects with `prompt` or
`question`, `chosen`, `rejected` and optionally `objective`, as `--config.data.files` reads).

The first line is exactly `NAME: N examples`; then the card: source and licence, splits,
per-objective counts, length histograms (whitespace tokens, ASCII bars), list sizes (steps,
turns), label balance (step labels, ratings, categorical fields).
"""
from __future__ import annotations

import argparse
import collections
import sys

BINS = (0, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
BAR = 40
TEXT_FIELDS = ("prompt", "chosen", "rejected", "response", "solution")
MAX_CATEGORIES = 25


def histogram(values: list[int], bins=BINS) -> list[str]:
    """ASCII histogram lines of `values` over `[bins[i], bins[i+1])` (last bin open)."""
    edges = [*bins, None]
    counts = [sum(1 for v in values if lo <= v and (hi is None or v < hi))
              for lo, hi in zip(edges[:-1], edges[1:])]
    top = max(counts) or 1
    lines = []
    for (lo, hi), c in zip(zip(edges[:-1], edges[1:]), counts):
        label = f"[{lo:>5}, {hi:>5})" if hi is not None else f"[{lo:>5},   inf)"
        lines.append(f"    {label} {c:>7} {'#' * round(BAR * c / top)}")
    while len(lines) > 1 and lines[-1].split()[-1] == "0":  # drop empty tail bins.
        lines.pop()
    return lines


def _summary(values: list[int]) -> str:
    s = sorted(values)
    return (f"min {s[0]}, median {s[len(s) // 2]}, mean {sum(s) / len(s):.1f}, max {s[-1]}"
            if s else "empty")


def _counts(title: str, counter: collections.Counter) -> list[str]:
    total = sum(counter.values()) or 1
    lines = [f"  {title}:"]
    for value, c in sorted(counter.items(), key=lambda kv: (-kv[1], str(kv[0]))):
        lines.append(f"    {str(value)[:60]:<40} {c:>7} ({100 * c / total:.1f}%)")
    return lines


def card(name: str, examples: list[dict], about: list[str]) -> str:
    """The full data card text; its first line is `NAME: N examples`."""
    lines = [f"{name}: {len(examples)} examples", *about]
    keys = list(examples[0]) if examples else []
    if "objective" in keys:
        lines += _counts("objectives", collections.Counter(e["objective"] for e in examples))
    if {"chosen", "rejected"} <= set(keys):
        same = sum(e["chosen"] == e["rejected"] for e in examples)
        longer = sum(len(e["chosen"].split()) > len(e["rejected"].split()) for e in examples)
        lines.append(f"  pairs: {same} with chosen == rejected; chosen longer than rejected in "
                     f"{longer} ({100 * longer / len(examples):.1f}%)")
    if examples:
        prompts = {e.get("prompt", e.get("question")) for e in examples}
        lines.append(f"  distinct prompts: {len(prompts)}")
    for field in TEXT_FIELDS:
        if field in keys and isinstance(examples[0][field], str):
            lengths = [len(e[field].split()) for e in examples]
            lines.append(f"  length of {field} (whitespace tokens): {_summary(lengths)}")
            lines += histogram(lengths)
    for field in keys:
        if isinstance(examples[0][field], list) and field not in ("step_labels", "step_ratings"):
            sizes = [len(e[field]) for e in examples]
            lines.append(f"  number of {field} per example: {_summary(sizes)}")
            lines += histogram(sizes, (0, 1, 2, 3, 5, 8, 13, 21, 34, 55))
    for field in ("step_labels", "step_ratings"):
        if field in keys:
            lines += _counts(f"label balance ({field}, over all steps)",
                             collections.Counter(v for e in examples for v in e[field]))
    if "ratings" in keys:
        for r in examples[0]["ratings"]:
            counter = collections.Counter(e["ratings"][r] for e in examples)
            lines += _counts(f"rating '{r}'", counter)
    for field in keys:
        if field in ("objective", "answer", "id", *TEXT_FIELDS) or field.endswith("_id"):
            continue
        values = [e[field] for e in examples]
        if all(isinstance(v, (str, int, bool)) for v in values):
            counter = collections.Counter(values)
            if 1 < len(counter) <= MAX_CATEGORIES:
                lines += _counts(field, counter)
    return "\n".join(lines)


def _source_about(cls, examples: list[dict]) -> list[str]:
    from mtalign_jax.data.sources.splits import split_by_prompt  # noqa: PLC0415
    from mtalign_jax.data.sources._builder import SPLIT_SALT  # noqa: PLC0415

    module = sys.modules[cls.__module__]
    doc = (module.__doc__ or "").strip().splitlines()
    parts = split_by_prompt(examples, cls.SPLITS, salt=SPLIT_SALT, key=cls.split_key)
    return [f"  source: {doc[0] if doc else cls.__name__}",
            f"  homepage: {cls.HOMEPAGE or '-'}", f"  licence: {cls.LICENSE or '-'}",
            "  splits (disjoint by prompt): "
            + ", ".join(f"{k} {len(v)}" for k, v in parts.items())]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name_or_path", help="a source name, or a preference-pair file")
    parser.add_argument("--path", default=None, help="the source's real file (default: offline)")
    parser.add_argument("--split", default="all")
    parser.add_argument("--data_dir", default=None, help="tfds cache (default $MTALIGN_DATA_DIR)")
    args = parser.parse_args(argv)

    from mtalign_jax.data.sources import SOURCES, load_source  # noqa: PLC0415
    from mtalign_jax.data.sources.socratic_mind import read_pairs  # noqa: PLC0415

    if args.name_or_path in SOURCES:
        cls = SOURCES[args.name_or_path]
        examples = load_source(args.name_or_path, args.path, args.split, data_dir=args.data_dir)
        about = _source_about(cls, examples) if args.split == "all" else \
            [f"  split: {args.split}"]
    else:
        examples = read_pairs(args.name_or_path, default_objective="(none)")
        about = [f"  source: preference-pair file {args.name_or_path}"]
    print(card(args.name_or_path, examples, about))
    return 0


if __name__ == "__main__":
    sys.exit(main())
