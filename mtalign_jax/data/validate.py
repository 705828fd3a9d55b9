"""Validation of the data files named in `--config.data.files`, before anything else runs.

Spec: "accuracy:PATH1,engagement:PATH2" (preference files, one objective each, in any order;
an objective may name several files) or "PATH" (SFT). Files are JSONL (one object a line, blank
lines ignored) or one JSON list of objects.

- Preference rows: `prompt` (or `question`; a string or a list of {role, content} messages),
  `chosen`, `rejected` (non-empty strings); an optional `objective` key must equal the objective
  the spec names for the file; other keys are kept as metadata. Rows come back with `prompt`
  (renamed from `question`) and `objective` set.
- SFT rows: `prompt` + `response`, or `messages` (a list of {role, content} whose last message
  is the assistant's, after at least one other). Rows come back as `prompt` (a string or the
  messages before the last) + `response`.

Every problem raises `DataError`, whose message's last line reads
`FILE:LINE: field 'NAME': what is wrong` (1-based line; in a JSON list file, the line where the
object starts; the field part is left out when no field applies, e.g. `FILE:3: invalid JSON:
...`; an absent or empty file reports line 1). With `skip_bad_rows=True` a bad row (or an
undecodable JSONL line) is skipped instead, counted per file (`Rows.skipped`, `Rows.errors`) and
reported on stderr; nothing is dropped silently. File-level errors (absent, empty, broken JSON
list, nothing valid left) always raise.
"""
from __future__ import annotations

import json
import os
import re
import sys
from typing import Optional, Sequence

PREFERENCE_TASKS = ("mahdpo", "dpo", "rm", "preference", "modpo", "scalarized")
SFT_TASKS = ("sft",)


class DataError(ValueError):
    """A data-file problem; the message's last line is `FILE:LINE: [field 'NAME': ]what`.

    `str(e)` is two lines (context, then that line), so a traceback ends with the bare line.
    """

    def __init__(self, path: str, line: int, what: str, field: Optional[str] = None,
                 context: str = ""):
        self.path, self.line, self.field, self.what = str(path), int(line), field, what
        last = f"{path}:{line}: " + (f"field '{field}': " if field else "") + what
        # The message always starts on its own line, so that the last line of a traceback
        # ("...DataError: <first line>" ... "<last line>") is exactly FILE:LINE: ...
        super().__init__(f"{context or 'invalid data file'}\n{last}")


class Rows(list):
    """The valid rows of one file, plus how many were skipped (and why)."""

    def __init__(self, rows=(), *, path: str = "", skipped: int = 0, errors=()):
        super().__init__(rows)
        self.path, self.skipped, self.errors = path, skipped, list(errors)


_OBJ = re.compile(r"^([A-Za-z_][A-Za-z0-9_\-]*):(.+)$")


def parse_files_spec(spec: str) -> list[tuple[Optional[str], str]]:
    """"acc:P1,eng:P2" -> [("acc", "P1"), ("eng", "P2")]; "P" -> [(None, "P")]."""
    out = []
    for item in str(spec).split(","):
        item = item.strip()
        if not item:
            raise DataError("--config.data.files", 1, f"empty entry in {spec!r}")
        m = _OBJ.match(item)
        out.append((m.group(1), m.group(2).strip()) if m else (None, item))
    return out


# -- reading ---------------------------------------------------------------------------------


class _RowError(Exception):
    def __init__(self, what: str, field: Optional[str] = None):
        super().__init__(what)
        self.what, self.field = what, field


def _read_objects(path: str, skipped: list) -> list[tuple[int, object]]:
    """[(line, parsed JSON value)] of a JSONL or JSON-list file; decoding errors raise (or, for a
    JSONL line when `skipped` is a list being collected, are appended to it as DataErrors)."""
    if not os.path.exists(path):
        raise DataError(path, 1, "file does not exist")
    if os.path.isdir(path):
        raise DataError(path, 1, "is a directory, not a data file")
    with open(path, "rb") as f:
        raw = f.read()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    if not raw.strip():
        raise DataError(path, 1, "file is empty")
    lines = raw.split(b"\n")
    first = raw.lstrip()[:1]
    if first == b"[":
        return _read_json_list(path, lines)
    out = []
    for n, b in enumerate(lines, start=1):
        try:
            text = _decode(path, n, b)
            if not text.strip():
                continue
            try:
                out.append((n, json.loads(text)))
            except json.JSONDecodeError as e:
                raise DataError(path, n, f"invalid JSON: {e.msg} (column {e.colno})")
        except DataError as e:
            if skipped is None:
                raise
            skipped.append(e)
    return out


def _decode(path: str, line: int, b: bytes) -> str:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(path, line, f"invalid UTF-8 byte 0x{b[e.start]:02x} at column "
                                    f"{e.start + 1} (the file must be UTF-8 encoded)")


def _read_json_list(path: str, lines: list[bytes]) -> list[tuple[int, object]]:
    """The objects of a JSON list file, each with the line where it starts."""
    text = "\n".join(_decode(path, n, b) for n, b in enumerate(lines, start=1))
    dec = json.JSONDecoder()
    line_of = lambda pos: text.count("\n", 0, pos) + 1  # noqa: E731
    ws = re.compile(r"\s*")
    pos = ws.match(text, text.index("[") + 1).end()
    out = []
    if text[pos:pos + 1] == "]":
        raise DataError(path, line_of(pos), "file is empty (an empty JSON list)")
    while True:
        try:
            obj, end = dec.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise DataError(path, e.lineno, f"invalid JSON: {e.msg} (column {e.colno})")
        out.append((line_of(pos), obj))
        pos = ws.match(text, end).end()
        sep = text[pos:pos + 1]
        if sep == "]":
            rest = text[pos + 1:]
            if rest.strip():
                p = pos + 1 + len(rest) - len(rest.lstrip())
                raise DataError(path, line_of(p), "invalid JSON: extra data after the list")
            return out
        if sep != ",":
            raise DataError(path, line_of(pos), "invalid JSON: expected ',' or ']' in the list")
        pos = ws.match(text, pos + 1).end()


# -- row checks ----------------------------------------------------------------------------


def _text(row: dict, field: str) -> str:
    if field not in row:
        raise _RowError("missing", field)
    v = row[field]
    if not isinstance(v, str):
        raise _RowError(f"expected a string (str), got {type(v).__name__}", field)
    if not v.strip():
        raise _RowError("is empty", field)
    return v


def _messages(v, field: str) -> list:
    if not isinstance(v, list):
        raise _RowError(f"expected a string (str) or a list of messages, got {type(v).__name__}",
                        field)
    if not v:
        raise _RowError("is empty (no messages)", field)
    for i, m in enumerate(v):
        if not isinstance(m, dict):
            raise _RowError(f"expected an object {{role, content}}, got {type(m).__name__}",
                            f"{field}[{i}]")
        for key in ("role", "content"):
            try:
                _text(m, key)
            except _RowError as e:
                raise _RowError(e.what, f"{field}[{i}].{key}")
    return v


def check_preference_row(row, objective: Optional[str] = None,
                         objectives: Optional[Sequence[str]] = None) -> dict:
    """A normalised preference row, or _RowError."""
    if not isinstance(row, dict):
        raise _RowError(f"expected a JSON object, got {type(row).__name__}")
    key = "prompt" if "prompt" in row else "question" if "question" in row else None
    if key is None:
        raise _RowError("missing (each row needs 'prompt' (or 'question'), 'chosen', "
                        "'rejected')", "prompt")
    prompt = _text(row, key) if isinstance(row[key], str) else _messages(row[key], key)
    chosen, rejected = _text(row, "chosen"), _text(row, "rejected")
    if "objective" in row:
        got = row["objective"]
        if objectives is not None and got not in objectives:
            raise _RowError(f"unknown objective {got!r} (valid: {', '.join(objectives)})",
                            "objective")
        if objective is not None and got != objective:
            raise _RowError(f"{got!r} does not match the objective {objective!r} that "
                            f"--config.data.files names for this file", "objective")
    out = {k: v for k, v in row.items() if k != "question"}
    out.update(prompt=prompt, chosen=chosen, rejected=rejected)
    if objective is not None:
        out["objective"] = objective
    return out


def check_sft_row(row) -> dict:
    """A normalised SFT row {prompt, response, ...metadata}, or _RowError."""
    if not isinstance(row, dict):
        raise _RowError(f"expected a JSON object, got {type(row).__name__}")
    if "messages" in row:
        msgs = _messages(row["messages"], "messages")
        if msgs[-1]["role"] != "assistant":
            raise _RowError(f"the last message must have role 'assistant', got "
                            f"{msgs[-1]['role']!r}", "messages")
        if len(msgs) < 2:
            raise _RowError("needs at least one message before the assistant's", "messages")
        out = {k: v for k, v in row.items() if k != "messages"}
        out.update(prompt=msgs[:-1], response=msgs[-1]["content"])
        return out
    if "prompt" not in row:
        raise _RowError("missing (each row needs 'prompt' and 'response', or 'messages')",
                        "prompt")
    prompt = row["prompt"]
    prompt = _text(row, "prompt") if isinstance(prompt, str) else _messages(prompt, "prompt")
    out = dict(row)
    out.update(prompt=prompt, response=_text(row, "response"))
    return out


def _load(path: str, check, skip_bad_rows: bool, what: str) -> Rows:
    path = str(path)
    skipped: Optional[list] = [] if skip_bad_rows else None
    rows = []
    for line, obj in _read_objects(path, skipped):
        try:
            rows.append(check(obj))
        except _RowError as e:
            err = DataError(path, line, e.what, e.field, context=f"bad {what} row")
            if skipped is None:
                raise err from None
            skipped.append(err)
    skipped = skipped or []
    if not rows:
        first = skipped[0] if skipped else DataError(path, 1, "file is empty")
        raise DataError(first.path, first.line, first.what, first.field,
                        context=f"{path}: no valid {what} rows ({len(skipped)} bad)")
    if skipped:
        print(f"[data] {path}: skipped {len(skipped)} bad row(s) of {len(rows) + len(skipped)}"
              f" (first: {str(skipped[0]).splitlines()[-1]})", file=sys.stderr, flush=True)
    return Rows(rows, path=path, skipped=len(skipped),
                errors=[str(e).splitlines()[-1] for e in skipped])


def load_preference_file(path: str, objective: Optional[str] = None, *,
                         objectives: Optional[Sequence[str]] = None,
                         skip_bad_rows: bool = False) -> Rows:
    """Validated preference rows of one file (see the module docstring)."""
    if objectives is not None and objective is not None and objective not in objectives:
        raise DataError(path, 1, f"unknown objective {objective!r} named for this file in "
                                 f"--config.data.files (valid: {', '.join(objectives)})")
    return _load(path, lambda r: check_preference_row(r, objective, objectives), skip_bad_rows,
                 "preference")


def load_sft_file(path: str, *, skip_bad_rows: bool = False) -> Rows:
    """Validated SFT rows {prompt, response} of one file (see the module docstring)."""
    return _load(path, check_sft_row, skip_bad_rows, "SFT")


def validate_files(spec: str, task: str, objectives: Optional[Sequence[str]] = None,
                   skip_bad_rows: bool = False):
    """Reads and checks every file of a `--config.data.files` spec.

    Returns (data, skipped): for "sft" data is the list of rows; for preference tasks
    ("mahdpo", "dpo", "rm", "preference") a dict objective -> rows in `objectives` order.
    skipped maps each path to its number of skipped rows (0 without skip_bad_rows).
    """
    specs = parse_files_spec(spec)
    skipped: dict[str, int] = {}
    if task in SFT_TASKS:
        rows: list = []
        for objective, path in specs:
            if objective is not None:
                raise DataError(path, 1, f"SFT data takes plain paths, got '{objective}:{path}'"
                                         f" in --config.data.files")
            r = load_sft_file(path, skip_bad_rows=skip_bad_rows)
            skipped[path] = r.skipped
            rows.extend(r)
        return rows, skipped
    if task not in PREFERENCE_TASKS:
        raise ValueError(f"validate_files: unknown task {task!r} "
                         f"({', '.join(SFT_TASKS + PREFERENCE_TASKS)})")
    if not objectives:
        raise ValueError("preference data needs the config's objective names, in head order")
    objectives = list(objectives)
    by_obj: dict[str, list] = {o: [] for o in objectives}
    for objective, path in specs:
        if objective is None:
            raise DataError(path, 1, f"preference files are named per objective: "
                                     f"--config.data.files={objectives[0]}:PATH,... "
                                     f"(objectives: {', '.join(objectives)})")
        r = load_preference_file(path, objective, objectives=objectives,
                                 skip_bad_rows=skip_bad_rows)
        skipped[path] = r.skipped
        by_obj[objective].extend(r)
    missing = [o for o in objectives if not by_obj[o]]
    if missing:
        raise ValueError(f"--config.data.files names no file for objective(s) "
                         f"{', '.join(missing)} (the config's objectives: "
                         f"{', '.join(objectives)})")
    return by_obj, skipped
