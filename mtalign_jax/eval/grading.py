"""Answer graders for verifiable objectives (math accuracy; generated arithmetic).

- `extract_boxed(text)`: the content of the last `\\boxed{...}` (nested braces handled).
- `grade_math(response, gold)`: PAPER.md §5.3: the response's last boxed answer is compared with
  the gold answer by `math_verify` (LaTeX/sympy parsing and equivalence), or, when math_verify
  cannot decide (no parse, an error or its time limit), or says no, by equality after a light
  LaTeX normalisation. A response without a boxed answer is wrong.
- `grade_exact_int(response, gold_int)`: the boxed answer, else the last integer in the text,
  must equal `gold_int` exactly (commas in numbers allowed: "1,024").

Reward-model judges for non-verifiable objectives live elsewhere (`judges`).
"""
from __future__ import annotations

import re
import threading

from mtalign_jax.data.segment import boxed_spans

_INT = re.compile(r"-?\d{1,3}(?:,\d{3})+(?![\d,])|-?\d+")


def extract_boxed(text: str) -> str | None:
    """The content of the last closed `\\boxed{...}` in `text`, or None."""
    spans = boxed_spans(text)
    if not spans:
        return None
    start, end = spans[-1]
    return text[text.index("{", start) + 1:end - 1]


def normalise_answer(answer: str) -> str:
    """A light LaTeX normalisation for string comparison of final answers."""
    s = answer.strip().strip("$").strip()
    s = re.sub(r"\\text\{([^{}]*)\}", r"\1", s)
    s = re.sub(r"\\(?:mbox|mathrm|textbf)\{([^{}]*)\}", r"\1", s)
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = re.sub(r"\^\{?\\circ\}?", "", s)
    for token in ("\\left", "\\right", "\\!", "\\,", "\\;", "\\:", "\\ ", "\\%", "%", "$"):
        s = s.replace(token, "")
    s = re.sub(r"\s+", "", s)
    s = s.rstrip(".")
    return s.lower()


def _math_verify(boxed: str, gold: str) -> bool | None:
    """math_verify's verdict, or None when it cannot parse one side or fails."""
    from math_verify import parse, verify  # noqa: PLC0415 (heavy import: sympy)

    # math_verify's time limits use SIGALRM, which only the main thread may set.
    limit = 5 if threading.current_thread() is threading.main_thread() else None
    try:
        gold_parsed = parse(f"$\\boxed{{{gold}}}$", parsing_timeout=limit)
        pred_parsed = parse(f"$\\boxed{{{boxed}}}$", parsing_timeout=limit)
        if not gold_parsed or not pred_parsed:
            return None
        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=limit))
    except Exception:  # noqa: BLE001 (timeouts and sympy errors fall back to strings)
        return None


def grade_math(response: str, gold: str) -> bool:
    """Whether the last boxed answer of `response` equals the gold answer (module doc)."""
    boxed = extract_boxed(response)
    if boxed is None:
        return False
    if _math_verify(boxed, gold):
        return True
    return normalise_answer(boxed) == normalise_answer(gold)


def extract_int(text: str) -> int | None:
    """The boxed integer of `text` if there is one, else its last integer, else None."""
    boxed = extract_boxed(text)
    if boxed is not None:
        m = re.fullmatch(r"\s*(-?[\d,]+)\s*\.?\s*", normalise_answer(boxed))
        if m and _INT.fullmatch(m.group(1)):
            return int(m.group(1).replace(",", ""))
        return None
    found = _INT.findall(text)
    return int(found[-1].replace(",", "")) if found else None


def grade_exact_int(response: str, gold_int: int) -> bool:
    """Exact integer match for generated arithmetic (module doc)."""
    return extract_int(response) == int(gold_int)
