"""Bad-input suite: every broken input names its line and field with a specific message."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from personalign.cli.data import app as data_app
from personalign.records.errors import RecordError
from personalign.records.io import ReadCounts, read_examples

GOOD = {"prompt": "Tips for a first marathon?", "chosen": "Build up slowly.", "rejected": "Just run."}


def line(**over) -> bytes:
    return json.dumps({**GOOD, **over}).encode() + b"\n"


def vec(**at) -> list:
    v = [1] * 90
    for i, x in at.items():
        v[int(i[1:])] = x
    return v


# name -> (file bytes, expected line, expected field, message fragment); good lines before the bad one.
CASES = {
    "malformed_json": (line() + b"\n" + b'{"prompt": "x", "chosen": }\n' + line(), 3, None,
                       "invalid JSON: Expecting value (column 27)"),
    "wrong_vector_length": (line() + line(**{"Preference Direction": [1] * 89}), 2, "Preference Direction",
                            "expected a list of 90 numbers, got 89"),
    "value_0_7": (line() + line() + line(**{"Preference Direction": vec(i17=0.7)}), 3, "Preference Direction[17]",
                  "expected one of 0, 0.5, 1, got 0.7"),
    "missing_chosen": (line() + json.dumps({"prompt": "p", "rejected": "r"}).encode() + b"\n", 2, "chosen",
                       "required key is missing"),
    "chosen_equals_rejected": (line(rejected=GOOD["chosen"]), 1, "rejected",
                               "expected a response different from 'chosen', got the same text"),
    "empty_prompt": (line() + line(prompt=""), 2, "prompt", "expected a non-empty string, got an empty string"),
    "ugc_item_is_a_string": (
        line(**{"User-Generated Content": [{"prompt": "a", "comment": "b"}, "I love running"]}), 1,
        "User-Generated Content[1]", "expected an object {prompt, comment}, got a string"),
    "pair_item_missing_rejected": (
        line() + line(**{"Pair-wise Comparative Feedback": [{"prompt": "a", "chosen": "b"}]}), 2,
        "Pair-wise Comparative Feedback[0].rejected", "required key is missing"),
    "non_utf8_bytes": (line() + b'{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}\n' + line(), 2, None,
                       "not valid UTF-8: byte 0xe9 at byte 16 of the line"),
    "truncated_last_line": (line() + line() + b'{"prompt": "p", "chosen": "a", "rej', 3, None,
                            "the last line has no final newline, so the file looks truncated"),
    "line_is_not_an_object": (line() + b'["prompt", "chosen"]\n', 2, None,
                              "expected a JSON object on each line, got a list"),
    "json_array_in_jsonl": (b"[\n" + line()[:-1] + b",\n" + line()[:-1] + b"\n]\n", 1, None,
                            "this file holds a JSON array spanning several lines, not one JSON object per line; "
                            "name it .json"),
    "empty_file": (b"", None, None, "file is empty"),
    "blank_lines_only": (b"\n  \n\n", None, None, "file is empty (only blank lines)"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_names_line_field_and_problem(tmp_path, name):
    content, lineno, field, fragment = CASES[name]
    path = tmp_path / "data.jsonl"
    path.write_bytes(content)
    with pytest.raises(RecordError, match=rf"data\.jsonl{'' if lineno is None else f':{lineno}'}: ") as info:
        list(read_examples(path))
    e = info.value
    assert (e.file, e.line, e.field) == (str(path), lineno, field)
    assert fragment in e.message, e.message
    where = f"{path}:{lineno}: " if lineno is not None else f"{path}: "
    assert str(e).startswith(where)


HUGE = 50_000_000


def huge_line(rejected: bytes) -> bytes:
    """One 50 MB record on a single line."""
    return b'{"prompt": "p", "chosen": "' + b"x" * HUGE + b'", "rejected": "' + rejected + b'"}\n'


def test_huge_valid_record_is_read(tmp_path):
    path = tmp_path / "huge.jsonl"
    path.write_bytes(line() + huge_line(b"short") + line())
    examples = list(read_examples(path))
    assert len(examples) == 3 and len(examples[1].chosen) == HUGE and examples[2].source == f"{path}:3"


def test_huge_invalid_record_names_its_line_and_the_next_is_read(tmp_path):
    path = tmp_path / "huge_bad.jsonl"
    path.write_bytes(line() + huge_line(b"") + line())
    with pytest.raises(RecordError, match="expected a non-empty string") as info:
        list(read_examples(path))
    assert (info.value.line, info.value.field) == (2, "rejected")
    assert info.value.message == "expected a non-empty string, got an empty string"
    counts = ReadCounts()
    assert len(list(read_examples(path, on_invalid="skip", counts=counts))) == 2
    assert (counts.accepted, counts.rejected) == (2, 1)


MIXED = [
    line(),
    b'{"prompt": "x", "chosen": }\n',
    line(**{"Preference Direction": vec(i3=0.7)}),
    b"\n",
    b'{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}\n',
    line(prompt="second good one"),
    b"[1, 2]\n",
    line(rejected=GOOD["chosen"]),
    line(prompt="last good one"),
]
N_RECORDS = 8  # every non-blank line is a record


def test_skip_mode_counts_every_record_and_keeps_bad_lines_verbatim(tmp_path):
    path, rejects = tmp_path / "mixed.jsonl", tmp_path / "rejects.jsonl"
    path.write_bytes(b"".join(MIXED))
    counts = ReadCounts()
    examples = list(read_examples(path, on_invalid="skip", rejects_path=rejects, counts=counts))
    assert [e.prompt for e in examples] == [GOOD["prompt"], "second good one", "last good one"]
    assert counts.accepted + counts.rejected == N_RECORDS and counts.rejected == 5
    entries = [json.loads(x) for x in rejects.read_text(encoding="utf-8").splitlines()]
    assert [e["line"] for e in entries] == [2, 3, 5, 7, 8]
    assert [e["field"] for e in entries] == [None, "Preference Direction[3]", None, None, "rejected"]
    assert "got 0.7" in entries[1]["error"] and "not valid UTF-8" in entries[2]["error"]
    for entry in entries:
        original = MIXED[entry["line"] - 1].rstrip(b"\n")
        assert entry["raw"].encode("utf-8", "surrogateescape") == original


def test_skip_mode_rejects_for_parquet_rows_hold_the_row_json(tmp_path):
    from personalign.records.io import write_parquet

    path, rejects = tmp_path / "rows.parquet", tmp_path / "rows.rejects.jsonl"
    write_parquet([GOOD, {**GOOD, "prompt": " "}, GOOD], path)
    counts = ReadCounts()
    assert len(list(read_examples(path, on_invalid="skip", rejects_path=rejects, counts=counts))) == 2
    (entry,) = [json.loads(x) for x in rejects.read_text().splitlines()]
    assert entry["line"] == 2 and entry["field"] == "prompt" and json.loads(entry["raw"]) == {**GOOD, "prompt": " "}


runner = CliRunner()


@pytest.fixture()
def wide(monkeypatch):
    """Output lines never wrapped: COLUMNS for consoles made from now on, a width for those that exist."""
    from personalign.cli import _common

    monkeypatch.setenv("COLUMNS", "1000")
    for console in (_common.console, _common.err_console):  # `_width` (None: follow COLUMNS) comes back after
        monkeypatch.setattr(console, "_width", 1000)


def test_cli_fail_mode_exits_2_naming_file_line_and_field(tmp_path, wide):
    path = tmp_path / "d.jsonl"
    path.write_bytes(CASES["value_0_7"][0])
    result = runner.invoke(data_app, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    assert result.output == f"error: expected one of 0, 0.5, 1, got 0.7 ({path}:3: Preference Direction[17])\n"
    assert not (tmp_path / "d.rejects.jsonl").exists()


def test_cli_skip_mode_prints_counts_and_rejects_path(tmp_path, wide):
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"".join(MIXED))
    result = runner.invoke(data_app, ["validate", str(path), "--on-invalid", "skip"])
    assert result.exit_code == 0, result.output
    assert f"{path}: 3 accepted, 5 rejected" in result.output.replace("\n", "")  # rich may wrap a long path
    rejects = tmp_path / "mixed.rejects.jsonl"
    assert f"rejected records written to {rejects}" in result.output
    assert len(rejects.read_text(encoding="utf-8").splitlines()) == 5


def test_cli_skip_mode_exits_1_when_every_record_is_rejected(tmp_path, wide):
    path, rejects = tmp_path / "bad.jsonl", tmp_path / "out" / "r.jsonl"
    path.write_bytes(b"{oops\n" + line(prompt=""))
    result = runner.invoke(data_app, ["validate", str(path), "--on-invalid", "skip", "--rejects", str(rejects)])
    assert result.exit_code == 1, result.output
    assert "0 accepted, 2 rejected" in result.output and len(rejects.read_text().splitlines()) == 2


def test_cli_clean_file_and_empty_file(tmp_path, wide, psoups_path):
    result = runner.invoke(data_app, ["validate", str(psoups_path)])
    assert result.exit_code == 0 and "600 accepted, 0 rejected" in result.output
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    result = runner.invoke(data_app, ["validate", str(empty), "--on-invalid", "skip"])
    assert result.exit_code == 2 and result.output == f"error: file is empty ({empty})\n"
