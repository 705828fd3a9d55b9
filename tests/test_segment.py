"""Step segmentation: exact round trips, math/dialogue/turn rules, token ids agreeing with text."""
import json
import random

import numpy as np
import pytest

from mtalign_jax.data.segment import (BoundaryTokens, completes_blank_line, math_boundary_token_ids,
                                      segment_math, segment_sentences, segment_token_ids,
                                      segment_turns, step_end_positions)


def byte_decode(ids):
    return bytes(ids).decode()


def byte_ids(text):
    return list(text.encode())


@pytest.fixture(scope="module")
def math500_solutions(shared_dir):
    with open(shared_dir / "data" / "math500.jsonl") as f:
        return [json.loads(line)["solution"] for line in f]


def test_math_round_trip_on_math500(math500_solutions):
    assert len(math500_solutions) == 500
    total = 0
    for text in math500_solutions:
        steps = segment_math(text)
        assert "".join(steps) == text
        assert all(steps)
        for step in steps[:-1]:  # every inner step ends at a blank line or after a boxed answer
            assert "\\boxed" in step or step.endswith("\n\n")
        total += len(steps)
    assert total > 1000  # MATH solutions have many blank-line steps


def test_math_hand_examples():
    assert segment_math("a\n\nb\n\n\nc") == ["a\n\n", "b\n\n\n", "c"]
    assert segment_math("a\n \nb") == ["a\n \n", "b"]  # a blank line holding a space
    assert segment_math("a\nb") == ["a\nb"]
    text = "So $x = \\boxed{\\frac{1}{2}}$. Check: done.\n\nExtra"
    assert segment_math(text) == ["So $x = \\boxed{\\frac{1}{2}}$. ", "Check: done.\n\n", "Extra"]
    assert segment_math("\\boxed{\\{1, 2\\}}.\n\nNext") == ["\\boxed{\\{1, 2\\}}.\n\n", "Next"]
    assert segment_math("unclosed \\boxed{3") == ["unclosed \\boxed{3"]
    assert segment_math("") == []


SENTENCE_TEXT = (
    "Dr. Smith met Mr. Jones, e.g. at the market, i.e. the old one near the river. They talked "
    "about the weather and other small things for a while. \"Is it going to rain today?\" he "
    "asked, looking up at the grey sky above them.\n\n1.\n\nBuy a good umbrella before the big "
    "storm arrives in town tomorrow.\nStep 2:\n\nStay inside and read a long book by the warm fire."
)


def test_sentences_abbreviations_list_markers_and_quotes():
    steps = segment_sentences(SENTENCE_TEXT)
    assert "".join(steps) == SENTENCE_TEXT
    assert steps == [
        "Dr. Smith met Mr. Jones, e.g. at the market, i.e. the old one near the river. ",
        "They talked about the weather and other small things for a while. ",
        "\"Is it going to rain today?\" he asked, looking up at the grey sky above them.\n\n",
        "1.\n\nBuy a good umbrella before the big storm arrives in town tomorrow.\n",
        "Step 2:\n\nStay inside and read a long book by the warm fire.",
    ]


def test_sentences_min_and_max_tokens():
    text = "Yes. No. Maybe so. " + " ".join(f"w{i}" for i in range(30)) + ". End."
    steps = segment_sentences(text, min_tokens=8, max_tokens=12)
    assert "".join(steps) == text
    # The short sentences (4 tokens < 8) run on; the next sentence end is too far (> 12), so
    # the chunk is cut at the last word that fits.
    assert steps[0] == "Yes. No. Maybe so. w0 w1 w2 w3 w4 w5 w6 w7 "
    assert segment_sentences("Yes. No. Maybe so. Then a longer sentence follows here.",
                             min_tokens=3) == ["Yes. No. Maybe so. ",
                                               "Then a longer sentence follows here."]
    assert all(len(s.split()) <= 12 for s in steps)
    assert all(len(s.split()) >= 8 for s in steps[:-1])
    # A custom token counter (characters) is honoured, also for one long word.
    long_word = "x" * 50 + " tail."
    char_steps = segment_sentences(long_word, min_tokens=1, max_tokens=20, count_tokens=len)
    assert "".join(char_steps) == long_word and all(len(s) <= 20 for s in char_steps)


def test_sentences_round_trip_random_texts():
    rng = random.Random(0)
    pieces = ["word", "e.g.", "Dr.", "1.", "\n\n", "\n", "end.", "really?!", "\"quote.\"",
              "(aside.)", "- item", "Step 3:", "  ", "3.14", "etc.", "\u00e9t\u00e9."]
    for _ in range(200):
        text = " ".join(rng.choice(pieces) for _ in range(rng.randint(0, 60)))
        steps = segment_sentences(text, min_tokens=rng.randint(1, 8),
                                  max_tokens=rng.randint(8, 30))
        assert "".join(steps) == text
        assert all(steps)


def test_turns():
    text = "Student: I think it loops.\n\nAssistant: Good. Why?\n\nStudent: Because i < 10."
    assert segment_turns(text) == ["Student: I think it loops.\n\n", "Assistant: Good. Why?\n\n",
                                   "Student: Because i < 10."]
    assert segment_turns("One tutor reply.\n\nWith two paragraphs.") == [
        "One tutor reply.\n\nWith two paragraphs."]


def test_token_ids_agree_with_text_on_math500(math500_solutions):
    for text in math500_solutions[:150] + ["Caf\u00e9 \u2212 na\u00efve.\n\nStep \u00e9\n\n"]:
        ids = byte_ids(text)
        token_steps = segment_token_ids(ids, byte_decode)
        assert [byte_decode(s) for s in token_steps] == segment_math(text)
        ends = step_end_positions(ids, byte_decode)
        assert ends[-1] == len(ids) - 1 and ends == sorted(set(ends))


def test_token_ids_agree_with_sentence_segmentation():
    ids = byte_ids(SENTENCE_TEXT)
    steps = segment_token_ids(ids, byte_decode, segment_sentences)
    assert [byte_decode(s) for s in steps] == segment_sentences(SENTENCE_TEXT)


def test_token_ids_with_merged_tokens():
    # A toy vocabulary whose tokens are multi-character strings (like BPE merges).
    vocab = ["We add", ".\n\n", "So ", "x", "=", "2", "\n", "\n\nEnd", " \\boxed{", "}", "."]
    decode = lambda ids: "".join(vocab[i] for i in ids)  # noqa: E731
    ids = [0, 1, 2, 3, 4, 8, 5, 9, 10, 6, 6, 2, 5]
    text = decode(ids)
    assert segment_math(text) == ["We add.\n\n", "So x= \\boxed{2}.\n\n", "So 2"]
    assert step_end_positions(ids, decode) == [1, 10, 12]


class ByteTokenizer:
    vocab_size = 256

    def decode(self, ids):
        return bytes(ids).decode()


class MergedTokenizer:
    vocab = ["a", "\n", "\n\n", " \n", "b\n", "\nc", "x \n \n"]
    vocab_size = len(vocab)

    def decode(self, ids):
        return "".join(self.vocab[i] for i in ids)


def test_boundary_token_ids_and_streaming_detector(math500_solutions):
    b = math_boundary_token_ids(ByteTokenizer())
    assert b.double_newline.size == 0 and list(b.ends_newline) == [10] == list(b.starts_newline)
    m = math_boundary_token_ids(MergedTokenizer())
    assert list(m.double_newline) == [2, 6]
    assert list(m.ends_newline) == [1, 2, 3, 4, 6] and list(m.starts_newline) == [1, 2, 3, 5]
    # On texts without boxed answers or 3+ newline runs, the streaming detector fires exactly at
    # the text segmentation's inner step ends.
    checked = 0
    for text in math500_solutions:
        if "\\boxed" in text.rsplit("\n\n", 1)[0] or "\n\n\n" in text:
            continue
        body = text.rsplit("\n\n", 1)[0] + "\n\nEnd"
        ids = np.asarray(byte_ids(body))
        fires = completes_blank_line(np.concatenate([[0], ids[:-1]]), ids, b)
        assert list(np.flatnonzero(fires)) == step_end_positions(list(ids), byte_decode)[:-1]
        checked += 1
    assert checked > 100
    assert isinstance(b, BoundaryTokens)
