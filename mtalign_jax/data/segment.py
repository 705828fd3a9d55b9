"""Step segmentation shared by PRMs (training targets) and PRM-guided decoding (PAPER.md 2.6, 4.2).

Every segmenter returns contiguous slices of its input: `"".join(steps) == text` exactly, and each
step keeps its trailing delimiter (the newlines, the sentence's punctuation and spaces).

- Math (`segment_math`): a step ends at a blank line (a run of two or more newlines, blank lines
  holding only spaces included; the whole run stays with the step) and right after the closing
  brace of a `\\boxed{...}` (with any closing `$`, `\\]`, `)` or punctuation right after it, and
  the whitespace that follows).
- Dialogue / human values (`segment_sentences`): a chunk ends at a paragraph break, but not when
  the chunk's last line is only a list marker ("1.", "-", "Step 2:"), and at sentence punctuation
  [.!?] with optional closing quotes or brackets followed by whitespace, except after
  abbreviations (e.g., i.e., etc., Dr., Mr., ...) and initials. Chunks hold at least `min_tokens`
  tokens (a shorter chunk runs on to the next boundary; only the last chunk may be shorter) and at
  most `max_tokens` (a longer one is cut at the last word that fits).
- Tutoring (`segment_turns`): whole turns; a single response is one step.

Token ids (`step_end_positions`): given ids and a decode function, the index of the last token of
each step, found by mapping the text steps onto the tokens' character offsets, so the token steps
decode to the text steps whenever a boundary falls between tokens (always, for byte-level tokens).
`math_boundary_token_ids` gives the per-vocabulary id sets a streaming decoder needs to see a blank
line complete on device (see `completes_blank_line`).
"""
from __future__ import annotations

import re
from typing import Callable, NamedTuple, Sequence

import numpy as np

# A newline followed by one or more (optionally space-filled) empty lines.
_BLANK_RUN = re.compile(r"\n(?:[ \t]*\n)+")
# What stays with a boxed step after its closing brace: closing math, punctuation, whitespace.
_AFTER_BOXED = re.compile(r"(?:\$\$|\$|\\\]|\\\)|[.,;:!?)\]])*\s*")
# Sentence end: punctuation, optional closing quotes/brackets, then the whitespace that follows
# (spaces, or a newline run), or the end of the text.
_SENTENCE_END = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*(?:[ \t]*\n(?:[ \t]*\n)*|[ \t]+|$)")
_LIST_MARKER = re.compile(
    r"^(?:[-*+\u2022>#]+|\(?\d{1,3}[.)]|\(?[a-zA-Z][.)]|\(?[ivxIVX]{1,4}[.)]"
    r"|(?:step|part|case|stage|phase|item|point)\s*\d{1,3}\s*[:.)]?)$",
    re.IGNORECASE)
ABBREVIATIONS = frozenset(
    "e.g. i.e. etc. vs. cf. al. approx. ca. viz. dr. mr. mrs. ms. prof. sr. jr. st. mt. no. "
    "nos. fig. figs. eq. eqs. vol. pp. p. ch. sec. inc. ltd. co. corp. dept. est. u.s. u.k. "
    "a.m. p.m. jan. feb. mar. apr. jun. jul. aug. sep. sept. oct. nov. dec. min. max. avg. "
    "resp. ref. refs. ed. eds.".split())


def whitespace_tokens(text: str) -> int:
    """The default token count: whitespace-separated words."""
    return len(text.split())


def _cut(text: str, boundaries) -> list[str]:
    """Slices `text` at the sorted interior `boundaries` (0 < b < len(text))."""
    cuts = sorted({b for b in boundaries if 0 < b < len(text)})
    edges = [0, *cuts, len(text)]
    return [text[a:b] for a, b in zip(edges[:-1], edges[1:]) if b > a]


def boxed_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each outermost `\\boxed{...}` whose braces close; end is after the `}`."""
    spans, pos = [], 0
    while (start := text.find("\\boxed", pos)) >= 0:
        i = start + len("\\boxed")
        while i < len(text) and text[i] == " ":
            i += 1
        if i >= len(text) or text[i] != "{":
            pos = start + 1
            continue
        depth = 0
        while i < len(text):
            if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in "{}":
                i += 2  # escaped brace: literal.
                continue
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
            if depth == 0:
                break
        if depth != 0:
            break  # unclosed (e.g. still being generated): no boundary.
        spans.append((start, i))
        pos = i
    return spans


def segment_math(text: str) -> list[str]:
    """Math steps: split at blank lines and after a closing `\\boxed{...}`; join gives `text`."""
    boundaries = [m.end() for m in _BLANK_RUN.finditer(text)]
    boundaries += [_AFTER_BOXED.match(text, end).end() for _, end in boxed_spans(text)]
    return _cut(text, boundaries)


def _last_line(text: str, end: int) -> str:
    return text[text.rfind("\n", 0, end) + 1:end].strip()


def _is_abbreviation(text: str, punct: int) -> bool:
    """Whether the '.' at `punct` ends an abbreviation or an initial (so not a sentence)."""
    if text[punct] != ".":
        return False
    word_start = max(text.rfind(c, 0, punct) for c in " \t\n(\"'") + 1
    word = text[word_start:punct + 1].lower()
    initial = bool(re.fullmatch(r"[a-z]\.", word)) and text[word_start].isupper()
    return word in ABBREVIATIONS or initial


def sentence_boundaries(text: str) -> list[int]:
    """Candidate chunk ends of dialogue text: paragraph breaks and sentence ends (module doc)."""
    out = []
    for m in _BLANK_RUN.finditer(text):
        if not _LIST_MARKER.match(_last_line(text, m.start())):
            out.append(m.end())
    for m in _SENTENCE_END.finditer(text):
        punct = m.start()
        line = _last_line(text, m.start() + 1)
        if _is_abbreviation(text, punct) or _LIST_MARKER.match(line):
            continue
        out.append(m.end())
    return sorted(set(out))


def _max_cut(text: str, start: int, end: int, max_tokens: int, count) -> int:
    """The furthest cut in (start, end) whose chunk text[start:cut] holds <= max_tokens."""
    ends = [m.end() for m in re.finditer(r"\S+\s*", text[start:end])]
    ends = [start + e for e in ends]
    lo, hi, best = 0, len(ends) - 1, None
    while lo <= hi:  # binary search over word ends (token count grows with the prefix).
        mid = (lo + hi) // 2
        if count(text[start:ends[mid]]) <= max_tokens:
            best, lo = ends[mid], mid + 1
        else:
            hi = mid - 1
    if best is not None and best > start:
        return best
    lo, hi, best = start + 1, end, start + 1  # a single word longer than the cap: cut characters.
    while lo <= hi:
        mid = (lo + hi) // 2
        if count(text[start:mid]) <= max_tokens:
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    return best


def segment_sentences(text: str, min_tokens: int = 8, max_tokens: int = 256,
                      count_tokens: Callable[[str], int] | None = None) -> list[str]:
    """Dialogue / human-values chunks (sentences or paragraphs, capped); join gives `text`."""
    if min_tokens > max_tokens:
        raise ValueError(f"min_tokens {min_tokens} > max_tokens {max_tokens}")
    count = count_tokens or whitespace_tokens
    steps, start = [], 0
    for b in [*sentence_boundaries(text), len(text)]:
        if b <= start:
            continue
        while count(text[start:b]) > max_tokens:
            cut = _max_cut(text, start, b, max_tokens, count)
            steps.append(text[start:cut])
            start = cut
        if start < b and (b == len(text) or count(text[start:b]) >= min_tokens):
            steps.append(text[start:b])
            start = b
    return steps


def segment_turns(text: str, speakers: Sequence[str] = ("Student", "Assistant", "User", "Tutor",
                                                         "System")) -> list[str]:
    """Tutoring: whole turns. A transcript is cut before each blank-line-separated `Speaker:`;
    a single response (no speaker labels) is one step."""
    names = "|".join(re.escape(s) for s in speakers)
    boundaries = [m.end() for m in re.finditer(rf"\n(?:[ \t]*\n)+(?=(?:{names}):)", text)]
    return _cut(text, boundaries)


def token_char_ends(ids: Sequence[int], decode: Callable[[list[int]], str]) -> list[int]:
    """`ends[i]` = number of characters of decode(ids[:i+1]) (complete characters only)."""
    ids = list(ids)
    try:
        pieces = [decode([t]) for t in ids]
        if "".join(pieces) == decode(ids):
            return list(np.cumsum([len(p) for p in pieces], dtype=np.int64).tolist())
    except UnicodeDecodeError:
        pass
    ends, last = [], 0
    for i in range(len(ids)):  # slow path: decode each prefix (multi-token characters).
        try:
            last = len(decode(ids[:i + 1]))
        except UnicodeDecodeError:
            pass  # ends inside a character: no new complete character yet.
        ends.append(last)
    return ends


def step_end_positions(ids: Sequence[int], decode: Callable[[list[int]], str],
                       segment: Callable[[str], list[str]] = segment_math) -> list[int]:
    """Index of the last token of each step of decode(ids) under `segment` (increasing).

    The step ending at character b ends at the first token whose text reaches b. Two steps
    ending inside one token give one position.
    """
    ids = list(ids)
    if not ids:
        return []
    steps = segment(decode(ids))
    char_ends = token_char_ends(ids, decode)
    positions, i, b = [], 0, 0
    for step in steps:
        b += len(step)
        while i < len(ids) - 1 and char_ends[i] < b:
            i += 1
        if not positions or positions[-1] != i:
            positions.append(i)
    return positions


def segment_token_ids(ids: Sequence[int], decode: Callable[[list[int]], str],
                      segment: Callable[[str], list[str]] = segment_math) -> list[list[int]]:
    """The ids cut into steps at `step_end_positions`."""
    ids = list(ids)
    starts = [0] + [p + 1 for p in step_end_positions(ids, decode, segment)]
    return [ids[a:b] for a, b in zip(starts[:-1], starts[1:])]


class BoundaryTokens(NamedTuple):
    """Vocabulary id sets for spotting a completed blank line while decoding.

    double_newline: ids whose text holds a blank line ("\\n\\n", possibly with spaces between);
    ends_newline: ids whose text ends with a newline (trailing spaces/tabs allowed);
    starts_newline: ids whose text starts with a newline (leading spaces/tabs allowed).
    """

    double_newline: np.ndarray
    ends_newline: np.ndarray
    starts_newline: np.ndarray


def math_boundary_token_ids(tokenizer) -> BoundaryTokens:
    """The `BoundaryTokens` of a tokenizer with `vocab_size` and `decode(list[int]) -> str`."""
    double, ends, starts = [], [], []
    for i in range(tokenizer.vocab_size):
        try:
            text = tokenizer.decode([i])
        except Exception:  # special or partial-byte ids that do not decode alone.
            continue
        if _BLANK_RUN.search(text):
            double.append(i)
        if text.rstrip(" \t").endswith("\n"):
            ends.append(i)
        if text.lstrip(" \t").startswith("\n"):
            starts.append(i)
    as_ids = lambda xs: np.asarray(xs, dtype=np.int32)  # noqa: E731
    return BoundaryTokens(as_ids(double), as_ids(ends), as_ids(starts))


def completes_blank_line(prev_ids, ids, boundary: BoundaryTokens):
    """Elementwise: does token `ids` complete a blank line (given the token `prev_ids` before it)?

    This is the streaming form of the math boundary: it fires on the token that first makes a
    "\\n\\n". It agrees with `step_end_positions(..., segment_math)` except where a newline run of
    three or more is split across tokens (the text rule keeps the whole run) and at `\\boxed{}`
    ends (decoders stop on those by their own rule). Works on numpy or jax arrays.
    """
    xp = np
    if type(ids).__module__.startswith("jax"):
        import jax.numpy as xp  # noqa: PLC0415 (only when given jax arrays)
    return xp.isin(ids, boundary.double_newline) | (
        xp.isin(prev_ids, boundary.ends_newline) & xp.isin(ids, boundary.starts_newline))
