"""Chit-Chat Challenge conversations with human engagement ratings (BYU PCC lab).

7,168 open-domain conversations between two people; 5,988 of them were rated by the
participants from 1 to 10 for `interesting`, `witty` and `upbeat`. Conversations start from a
few dozen opening prompts (35 among the rated ones), so the prompt of an example is a
conversation prefix and the target is the next turn.

Source: the `chitchat-dataset` PyPI package (`chitchat_dataset/dataset.json`, found with
`importlib.util.find_spec`): a JSON object {conversation id: {`prompt` (the opening prompt),
`start`, `messages`: [[{`text`, `sender`, `timestamp`}, ...], ...] (one inner list per turn:
consecutive messages of one sender), `ratings`: {`interesting`, `witty`, `upbeat`} (1-10)}}.
Licence: MIT. Homepage: https://github.com/BYU-PCCL/chitchat-dataset.
Point at your own copy with `load_source("chitchat", path="/path/to/dataset.json")`.

Sources:
- `chitchat`: one example per rated conversation (unrated ones are skipped): `id`, `prompt` (the
  opening prompt, which also keys the split), `turns` (each turn's messages joined by newlines),
  `ratings` {interesting, witty, upbeat}, `engagement` (their mean).
- `chitchat_engagement`: preference pairs for an engagement objective (`engagement_pairs`).
"""
from __future__ import annotations

import pathlib

from mtalign_jax.data.sources import _io
from mtalign_jax.data.sources._builder import SourceBuilder
from mtalign_jax.data.sources.gsm8k import package_file

RATINGS = ("interesting", "witty", "upbeat")


def render(topic: str, turns: list[str]) -> str:
    """The prompt text of a prefix: the opening prompt, then the turns, then the next speaker.

    Turns alternate speakers; the speaker of the next turn is "Assistant", the other "User".
    (Two rated conversations have an empty opening prompt: then there is no starter line.)
    """
    n = len(turns)
    lines = [f"Conversation starter: {topic}"] if topic else []
    for i, turn in enumerate(turns):
        lines.append(f"{'Assistant' if (n - i) % 2 == 0 else 'User'}: {turn}")
    lines.append("Assistant:")
    return "\n\n".join(lines)


def next_turn_examples(conversation: dict) -> list[dict]:
    """Every (prefix -> next turn) example of one conversation: `prompt`, `response`, `turn`."""
    turns = conversation["turns"]
    return [{"prompt": render(conversation["prompt"], turns[:t]), "response": turns[t], "turn": t}
            for t in range(len(turns))]


def _norm(turn: str) -> str:
    return "".join(c for c in turn.casefold() if c.isalnum())


def engagement_pairs(conversations: list[dict], margin: float = 2.0,
                     max_prefix_turns: int | None = None) -> list[dict]:
    """Engagement preference pairs from the human ratings.

    Conversations with the same opening prompt are sorted by `engagement` (ties broken by id)
    and the i-th most engaging is paired with the i-th least engaging while their ratings differ
    by at least `margin`; each conversation is used at most once. The pair's prompt is the
    shared opening prefix: the opening prompt plus the leading turns on which both agree (up to
    case and punctuation, at most `max_prefix_turns`); chosen and rejected are each
    conversation's next turn. Pairs whose next turns are the same (or missing) are dropped.
    Fields: `prompt`, `chosen`, `rejected`, `objective` ("engagement"), `topic`, `chosen_id`,
    `rejected_id`, `chosen_score`, `rejected_score`, `prefix_turns`.
    """
    by_topic: dict[str, list[dict]] = {}
    for c in conversations:
        by_topic.setdefault(c["prompt"], []).append(c)
    pairs = []
    for topic in sorted(by_topic):
        ranked = sorted(by_topic[topic], key=lambda c: (-c["engagement"], c["id"]))
        for hi, lo in zip(ranked[: len(ranked) // 2], reversed(ranked[len(ranked) // 2:])):
            if hi["engagement"] - lo["engagement"] < margin:
                break
            k = 0
            limit = min(len(hi["turns"]), len(lo["turns"]))
            if max_prefix_turns is not None:
                limit = min(limit, max_prefix_turns)
            while k < limit and _norm(hi["turns"][k]) == _norm(lo["turns"][k]):
                k += 1
            if k >= len(hi["turns"]) or k >= len(lo["turns"]):
                continue
            chosen, rejected = hi["turns"][k], lo["turns"][k]
            if _norm(chosen) == _norm(rejected):
                continue
            pairs.append({"prompt": render(topic, hi["turns"][:k]), "chosen": chosen,
                          "rejected": rejected, "objective": "engagement", "topic": topic,
                          "chosen_id": hi["id"], "rejected_id": lo["id"],
                          "chosen_score": hi["engagement"], "rejected_score": lo["engagement"],
                          "prefix_turns": k})
    return pairs


def read_conversations(path) -> list[dict]:
    """The rated conversations of a chitchat `dataset.json`, in file order."""
    data, text = _io.read_json(path)
    if not isinstance(data, dict):
        _io.fail(path, 1, f"expected an object of conversations, got {type(data).__name__}")
    out = []
    for cid, conv in data.items():
        line = lambda cid=cid: _io.line_of_key(text, cid)  # noqa: E731 (only on errors)
        if not isinstance(conv, dict):
            _io.fail(path, line, f"expected an object, got {type(conv).__name__}", cid)
        ratings = _io.get(conv, "ratings", dict, path, line, name=f"{cid}.ratings", optional=True)
        if ratings is None:
            continue
        scores = {}
        for r in RATINGS:
            v = _io.get(ratings, r, int, path, line, name=f"{cid}.ratings.{r}")
            if not 1 <= v <= 10:
                _io.fail(path, line, f"rating {v} outside 1..10", f"{cid}.ratings.{r}")
            scores[r] = v
        turns = []
        messages = _io.get(conv, "messages", list, path, line, name=f"{cid}.messages")
        for t, turn in enumerate(messages):
            name = f"{cid}.messages[{t}]"
            if not isinstance(turn, list) or not turn:
                _io.fail(path, line, "expected a non-empty list of messages", name)
            turns.append("\n".join(_io.get(m, "text", str, path, line, name=f"{name}.text")
                                   for m in turn))
        out.append({"id": cid, "prompt": _io.get(conv, "prompt", str, path, line,
                                                  name=f"{cid}.prompt"),
                    "turns": turns, "ratings": scores,
                    "engagement": sum(scores.values()) / len(scores)})
    return out


class Chitchat(SourceBuilder, skip_registration=True):
    """Rated chit-chat conversations (prompt = opening prompt, turns, ratings)."""

    FIELDS = {"id": "text", "prompt": "text", "turns": "text_list", "ratings": "json",
              "engagement": "json"}
    HOMEPAGE = "https://github.com/BYU-PCCL/chitchat-dataset"
    LICENSE = "MIT"
    CITATION = "Chit-Chat Challenge dataset, BYU Perception, Control and Cognition lab"

    @classmethod
    def default_path(cls) -> pathlib.Path:
        return package_file("chitchat_dataset", "dataset.json")

    @classmethod
    def read(cls, path=None, **options) -> list[dict]:
        return read_conversations(path or cls.default_path())


class ChitchatEngagement(SourceBuilder, skip_registration=True):
    """Engagement preference pairs built from the rated conversations (`engagement_pairs`)."""

    FIELDS = {"prompt": "text", "chosen": "text", "rejected": "text", "objective": "text",
              "topic": "text", "chosen_id": "text", "rejected_id": "text",
              "chosen_score": "json", "rejected_score": "json", "prefix_turns": "int"}
    DEFAULT_OPTIONS = {"margin": 2.0}
    HOMEPAGE, LICENSE, CITATION = Chitchat.HOMEPAGE, Chitchat.LICENSE, Chitchat.CITATION

    @classmethod
    def default_path(cls) -> pathlib.Path:
        return Chitchat.default_path()

    @classmethod
    def split_key(cls, example: dict) -> str:
        return example["topic"]  # Keep every pair of one opening prompt in one split.

    @classmethod
    def read(cls, path=None, margin: float = 2.0, **options) -> list[dict]:
        return engagement_pairs(read_conversations(path or cls.default_path()), margin, **options)
