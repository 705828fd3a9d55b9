"""Reading source files with errors that name the file, the line and the field.

Every malformed input raises `ValueError` whose message's last line is
`FILE:LINE: field 'NAME': what is wrong` (1-based line; the field part is left out when
no field applies, e.g. broken JSON).
"""
from __future__ import annotations

import json
import pathlib
from typing import Any, Iterator

_TYPE_NAMES = {str: "a string", int: "an integer", list: "a list", dict: "an object",
               bool: "a boolean", float: "a number"}


def fail(path, line, message: str, field: str | None = None):
    """Raises ValueError ending in `FILE:LINE: field 'NAME': message`.

    `line` is an int or a callable returning it (computed only when there is an error).
    """
    line = line() if callable(line) else line
    where = f"{path}:{line}: " + (f"field '{field}': " if field else "")
    raise ValueError(f"malformed source data\n{where}{message}")


def _type_name(types) -> str:
    types = types if isinstance(types, tuple) else (types,)
    return " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)


def get(obj: dict, field: str, types, path, line, *, name: str | None = None,
        optional: bool = False) -> Any:
    """`obj[field]` checked to be of `types`; `name` is the dotted name used in errors.

    `line` is an int or a callable returning it (see `fail`).
    """
    name = name or field
    if not isinstance(obj, dict):
        fail(path, line, f"expected an object, got {type(obj).__name__}", name.rsplit(".", 1)[0]
             if "." in name else None)
    if field not in obj or (optional and obj[field] is None):
        if optional:
            return None
        fail(path, line, "missing", name)
    value = obj[field]
    types_t = types if isinstance(types, tuple) else (types,)
    # bool is a subclass of int: an integer field must not accept True/False.
    if not isinstance(value, types_t) or (isinstance(value, bool) and bool not in types_t):
        fail(path, line, f"expected {_type_name(types)}, got {type(value).__name__}", name)
    return value


def check_file(path) -> pathlib.Path:
    """The path as a `pathlib.Path`; a missing or empty file is an error."""
    p = pathlib.Path(path)
    if not p.is_file():
        raise ValueError(f"source file not found\n{p}:1: file does not exist")
    if p.stat().st_size == 0:
        raise ValueError(f"empty source file\n{p}:1: file is empty")
    return p


def read_jsonl(path) -> Iterator[tuple[int, Any]]:
    """Yields `(line_number, object)` for each non-blank line of a JSONL file."""
    p = check_file(path)
    with open(p, encoding="utf-8") as f:
        for number, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                yield number, json.loads(text)
            except json.JSONDecodeError as e:
                fail(p, number, f"broken JSON: {e.msg} (column {e.colno})")


def read_json(path) -> tuple[Any, str]:
    """(parsed object, raw text) of a JSON file; broken JSON names its line."""
    p = check_file(path)
    text = p.read_text(encoding="utf-8")
    try:
        return json.loads(text), text
    except json.JSONDecodeError as e:
        fail(p, e.lineno, f"broken JSON: {e.msg} (column {e.colno})")


def read_json_array(path) -> Iterator[tuple[int, Any]]:
    """Yields `(line_number, element)` for each element of a top-level JSON list.

    The line number is where the element starts, so errors point at the right record.
    """
    p = check_file(path)
    text = p.read_text(encoding="utf-8")
    decoder = json.JSONDecoder()
    pos = _skip_ws(text, 0)
    if pos >= len(text) or text[pos] != "[":
        fail(p, line_of(text, pos), "expected a JSON list of objects")
    pos = _skip_ws(text, pos + 1)
    if pos < len(text) and text[pos] == "]":
        return
    line, counted = 1, 0
    while True:
        line += text.count("\n", counted, pos)  # incremental: linear in the file size.
        counted = pos
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            fail(p, e.lineno, f"broken JSON: {e.msg} (column {e.colno})")
        yield line, value
        pos = _skip_ws(text, pos)
        if pos < len(text) and text[pos] == ",":
            pos = _skip_ws(text, pos + 1)
            continue
        if pos < len(text) and text[pos] == "]":
            if _skip_ws(text, pos + 1) != len(text):
                fail(p, line_of(text, pos + 1), "broken JSON: extra data after the list")
            return
        fail(p, line_of(text, pos), "broken JSON: expected ',' or ']' in the list")


def line_of(text: str, pos: int) -> int:
    """1-based line number of character offset `pos` in `text`."""
    return text.count("\n", 0, pos) + 1


def line_of_key(text: str, *keys: str) -> int:
    """1-based line of the nested JSON keys `"k1": ... "k2":` (searched in order; a key not
    found leaves the line of the previous one)."""
    pos = 0
    for key in keys:
        found = text.find(json.dumps(key, ensure_ascii=False) + ":", pos)
        if found < 0:
            break
        pos = found
    return line_of(text, pos)


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos
