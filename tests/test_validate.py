"""Data-file validation: every malformed case names FILE:LINE and the field, exactly."""
import json

import pytest

from mtalign_jax.data.validate import (DataError, load_preference_file, load_sft_file,
                                       parse_files_spec, validate_files)

GOOD = {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"}


def write_lines(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def last_line(exc_info) -> str:
    return str(exc_info.value).strip().splitlines()[-1]


PREF_CASES = [  # rows, line, expected last line after "FILE:"
    ([GOOD, {"prompt": "x", "chosen": "y"}], "2: field 'rejected': missing"),
    ([GOOD, {"chosen": "y", "rejected": "z"}],
     "2: field 'prompt': missing (each row needs 'prompt' (or 'question'), 'chosen', 'rejected')"),
    ([GOOD, GOOD, {"prompt": "x", "chosen": "", "rejected": "z"}], "3: field 'chosen': is empty"),
    ([{"prompt": "x", "chosen": "y", "rejected": "  \n "}], "1: field 'rejected': is empty"),
    ([{"question": "", "chosen": "y", "rejected": "z"}], "1: field 'question': is empty"),
    ([{"prompt": "x", "chosen": 3, "rejected": "z"}],
     "1: field 'chosen': expected a string (str), got int"),
    ([GOOD, {"prompt": 7, "chosen": "y", "rejected": "z"}],
     "2: field 'prompt': expected a string (str) or a list of messages, got int"),
    ([{"prompt": [{"role": "user", "content": "a"}, {"role": "user"}], "chosen": "y",
       "rejected": "z"}], "1: field 'prompt[1].content': missing"),
    ([GOOD, "", GOOD, '{"prompt": "x", "chosen": '],
     "4: invalid JSON: Expecting value (column 27)"),
    ([GOOD, "[1, 2]"], "2: expected a JSON object, got list"),
    ([GOOD, dict(GOOD, objective="engagement")],
     "2: field 'objective': 'engagement' does not match the objective 'accuracy' that "
     "--config.data.files names for this file"),
]


@pytest.mark.parametrize("rows,expected", PREF_CASES)
def test_malformed_preference_rows(tmp_path, rows, expected):
    path = write_lines(tmp_path / "pairs.jsonl", rows)
    with pytest.raises(DataError) as e:
        load_preference_file(str(path), "accuracy")
    assert last_line(e) == f"{path}:{expected}"


def test_absent_empty_and_non_utf8_files(tmp_path):
    with pytest.raises(DataError) as e:
        load_preference_file(str(tmp_path / "nope.jsonl"), "accuracy")
    assert last_line(e) == f"{tmp_path / 'nope.jsonl'}:1: file does not exist"
    for name, content in (("empty.jsonl", b""), ("blank.jsonl", b"\n  \n"),
                          ("emptylist.json", b"  []\n")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DataError) as e:
            load_preference_file(str(tmp_path / name), "accuracy")
        assert last_line(e).startswith(f"{tmp_path / name}:1: file is empty"), last_line(e)
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(json.dumps(GOOD).encode() + b"\n" + b'{"prompt": "caf\xe9", "chosen": "a",'
                    b' "rejected": "b"}\n')
    with pytest.raises(DataError) as e:
        load_preference_file(str(bad), "accuracy")
    assert last_line(e) == (f"{bad}:2: invalid UTF-8 byte 0xe9 at column 16 (the file must be "
                            f"UTF-8 encoded)")
    assert (e.value.path, e.value.line, e.value.field) == (str(bad), 2, None)


def test_json_list_lines_are_where_objects_start(tmp_path):
    path = tmp_path / "pairs.json"
    path.write_text('[\n  {"prompt": "a", "chosen": "b", "rejected": "c"},\n'
                    '  {"prompt": "a",\n   "chosen": "b",\n   "rejected": "c", "k": 1},\n'
                    '  {\n   "prompt": "a",\n   "chosen": ""\n  }\n]\n')
    with pytest.raises(DataError) as e:
        load_preference_file(str(path), "accuracy")
    assert last_line(e) == f"{path}:6: field 'chosen': is empty"
    path.write_text('[\n  {"prompt": "a", "chosen": "b", "rejected": "c"},\n'
                    '  {"prompt": "a", "chosen": "b" "rejected": "c"}\n]\n')
    with pytest.raises(DataError) as e:
        load_preference_file(str(path), "accuracy")
    assert last_line(e) == f"{path}:3: invalid JSON: Expecting ',' delimiter (column 33)"
    path.write_text('[{"prompt": "a", "chosen": "b", "rejected": "c", "k": 1},\n'
                    ' {"question": "q", "chosen": "b", "rejected": "c"}]')
    rows = load_preference_file(str(path), "accuracy")
    assert rows == [{"prompt": "a", "chosen": "b", "rejected": "c", "k": 1,
                     "objective": "accuracy"},
                    {"prompt": "q", "chosen": "b", "rejected": "c", "objective": "accuracy"}]


def test_unknown_objective_lists_valid_names(tmp_path):
    good = write_lines(tmp_path / "good.jsonl", [GOOD] * 2)
    with pytest.raises(DataError) as e:
        validate_files(f"accuracy:{good},style:{good}", "mahdpo", ["accuracy", "engagement"])
    assert last_line(e) == (f"{good}:1: unknown objective 'style' named for this file in "
                            f"--config.data.files (valid: accuracy, engagement)")
    row_obj = write_lines(tmp_path / "obj.jsonl", [GOOD, dict(GOOD, objective="humour")])
    with pytest.raises(DataError) as e:
        validate_files(f"accuracy:{row_obj}", "mahdpo", ["accuracy"])
    assert last_line(e) == (f"{row_obj}:2: field 'objective': unknown objective 'humour' "
                            f"(valid: accuracy)")


def test_validate_files_preferences_and_sft(tmp_path):
    a = write_lines(tmp_path / "a.jsonl", [GOOD] * 3)
    b = write_lines(tmp_path / "b.jsonl", [dict(GOOD, objective="engagement", meta=5)] * 2)
    data, skipped = validate_files(f"engagement:{b},accuracy:{a}", "mahdpo",
                                   ["accuracy", "engagement"])
    assert list(data) == ["accuracy", "engagement"]
    assert [len(data["accuracy"]), len(data["engagement"])] == [3, 2]
    assert data["engagement"][0]["meta"] == 5 and skipped == {str(b): 0, str(a): 0}
    with pytest.raises(ValueError, match="no file for objective"):
        validate_files(f"accuracy:{a}", "mahdpo", ["accuracy", "engagement"])
    with pytest.raises(DataError) as e:
        validate_files(str(a), "mahdpo", ["accuracy"])
    assert last_line(e).startswith(f"{a}:1: preference files are named per objective")
    sft = write_lines(tmp_path / "sft.jsonl", [
        {"prompt": "Hi", "response": "Hello"},
        {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                      {"role": "assistant", "content": "a"}], "id": 9}])
    rows, skipped = validate_files(str(sft), "sft")
    assert rows == [{"prompt": "Hi", "response": "Hello"},
                    {"prompt": [{"role": "system", "content": "s"},
                                {"role": "user", "content": "u"}], "response": "a", "id": 9}]
    with pytest.raises(DataError) as e:
        validate_files(f"accuracy:{sft}", "sft")
    assert last_line(e).startswith(f"{sft}:1: SFT data takes plain paths")


SFT_CASES = [
    ([{"prompt": "Hi"}], "1: field 'response': missing"),
    ([{"response": "x"}],
     "1: field 'prompt': missing (each row needs 'prompt' and 'response', or 'messages')"),
    ([{"prompt": "Hi", "response": "ok"}, {"messages": [{"role": "user", "content": "u"}]}],
     "2: field 'messages': the last message must have role 'assistant', got 'user'"),
    ([{"messages": [{"role": "assistant", "content": "a"}]}],
     "1: field 'messages': needs at least one message before the assistant's"),
    ([{"messages": "hello"}],
     "1: field 'messages': expected a string (str) or a list of messages, got str"),
    ([{"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "a"}]}],
     "1: field 'messages[0].content': is empty"),
]


@pytest.mark.parametrize("rows,expected", SFT_CASES)
def test_malformed_sft_rows(tmp_path, rows, expected):
    path = write_lines(tmp_path / "sft.jsonl", rows)
    with pytest.raises(DataError) as e:
        load_sft_file(str(path))
    assert last_line(e) == f"{path}:{expected}"


def test_skip_bad_rows_counts_and_reports(tmp_path, capsys):
    path = write_lines(tmp_path / "mixed.jsonl", [
        GOOD, '{"prompt": "x", ', GOOD, {"prompt": "x", "chosen": "y"}, GOOD])
    rows = load_preference_file(str(path), "accuracy", skip_bad_rows=True)
    assert len(rows) == 3 and rows.skipped == 2
    assert rows.errors == [f"{path}:2: invalid JSON: Expecting property name enclosed in double "
                           f"quotes (column 17)", f"{path}:4: field 'rejected': missing"]
    assert f"{path}: skipped 2 bad row(s) of 5" in capsys.readouterr().err
    _, skipped = validate_files(f"accuracy:{path}", "mahdpo", ["accuracy"], skip_bad_rows=True)
    assert skipped == {str(path): 2}
    # Nothing valid left: an error naming the first bad row.
    allbad = write_lines(tmp_path / "allbad.jsonl", [{"prompt": "x"}, {"chosen": "y"}])
    with pytest.raises(DataError) as e:
        load_preference_file(str(allbad), "accuracy", skip_bad_rows=True)
    assert last_line(e) == f"{allbad}:1: field 'chosen': missing"
    assert "no valid preference rows (2 bad)" in str(e.value)


def test_parse_files_spec():
    assert parse_files_spec("accuracy:/d/a.jsonl, engagement:b.json") == [
        ("accuracy", "/d/a.jsonl"), ("engagement", "b.json")]
    assert parse_files_spec("data/sft.jsonl") == [(None, "data/sft.jsonl")]
    with pytest.raises(DataError):
        parse_files_spec("a:x,,b:y")
