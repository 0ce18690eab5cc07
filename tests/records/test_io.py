"""Readers and writers: formats, round trips, line numbers, streaming, the rejects file."""
from __future__ import annotations

import json
import tracemalloc

import datasets
import pyarrow.parquet as pq
import pytest

from personalign.records.errors import RecordError
from personalign.records.io import (
    ReadCounts,
    check_source,
    default_rejects_path,
    iter_raw,
    read_examples,
    validate_file,
    write_examples,
    write_json_array,
    write_jsonl,
    write_parquet,
)


def vec(fill: float) -> list:
    return [fill] * 90


RECORDS = [
    {"prompt": "p0", "chosen": "a", "rejected": "b"},
    {"prompt": "p1", "chosen": "a", "rejected": "b", "Preference Direction": vec(1), "Demographic Information": "D",
     "User-Generated Content": [{"prompt": "u", "comment": "c", "Preference Direction": vec(0.5)}],
     "Pair-wise Comparative Feedback": [{"prompt": "q", "chosen": "x", "rejected": "y"}]},
    {"prompt": "p2", "chosen": "a", "rejected": "b", "chosen_persona_gold": "The user is terse.", "tag": {"k": [1, 2]}},
    {"prompt": "p3", "responses": ["r1", "r2", "r3"], "rewards": [0.5, 2.0, 1.0]},
    {"prompt": "p4", "chosen": "a", "rejected": "b", "ground_truth_persona": "Be funny.", "profile": "Likes humor",
     "User-Generated Content": [{"prompt": "u", "comment": "c"}]},
]


def key(ex):
    return ex.prompt, ex.responses, ex.rewards, ex.user, ex.extra


def test_psoups_loads_with_no_rejects_and_element_start_lines(psoups_path):
    counts = ReadCounts()
    examples = list(read_examples(psoups_path, on_invalid="skip", counts=counts))
    assert (counts.accepted, counts.rejected) == (600, 0) and len(examples) == 600
    ex = examples[0]
    assert ex.user.persona("gold") and ex.user.profile and len(ex.user.pairs) == 4 and ex.user.ugc == []
    lines = psoups_path.read_text(encoding="utf-8").splitlines()
    for ex in (examples[0], examples[1], examples[599]):
        n = int(ex.source.rsplit(":", 1)[1])
        assert lines[n - 1].strip() == "{"
        assert json.loads("{" + lines[n].strip().rstrip(",") + "}") == {"prompt": ex.prompt}


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet"])
def test_write_then_read_round_trips(tmp_path, suffix):
    first = list(read_examples(_jsonl(tmp_path / "in.jsonl", RECORDS)))
    out = tmp_path / f"out{suffix}"
    assert write_examples(first, out) == len(RECORDS)
    again = list(read_examples(out))
    assert [key(e) for e in again] == [key(e) for e in first]
    assert again[3].responses == ["r2", "r3", "r1"] and again[2].user.personas == {"chosen_persona": "The user is terse."}
    assert again[1].user.ugc[0].direction == vec(0.5) and again[4].user.ugc[0].direction is None


def test_dataset_directory_and_splits(tmp_path, psoups_path):
    rows = json.loads(psoups_path.read_text(encoding="utf-8"))[:30]
    datasets.Dataset.from_list(rows).save_to_disk(tmp_path / "single")
    expected = [key(e) for e in read_examples(psoups_path)][:30]
    assert [key(e) for e in read_examples(tmp_path / "single")] == expected
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:20]),
                          "test": datasets.Dataset.from_list(rows[20:])}).save_to_disk(tmp_path / "dd")
    both = list(read_examples(tmp_path / "dd"))
    assert [key(e) for e in both] == expected
    assert both[0].source == f"{tmp_path / 'dd'}:train:1" and both[20].source == f"{tmp_path / 'dd'}:test:1"
    test_only = list(read_examples(f"{tmp_path / 'dd'}:test"))
    assert [key(e) for e in test_only] == expected[20:]
    with pytest.raises(RecordError, match="no split 'dev'; the dataset has train, test"):
        list(read_examples(f"{tmp_path / 'dd'}:dev"))
    (tmp_path / "plain").mkdir()
    with pytest.raises(RecordError, match="not a dataset directory"):
        list(read_examples(tmp_path / "plain"))


def test_dataset_rows_with_errors_name_the_row(tmp_path):
    rows = [{"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": "p", "chosen": "a", "rejected": "a"}]
    datasets.Dataset.from_list(rows).save_to_disk(tmp_path / "ds")
    with pytest.raises(RecordError, match=r"field 'rejected'") as info:
        list(read_examples(tmp_path / "ds"))
    assert (info.value.line, info.value.field) == (2, "rejected")


def test_parquet_schema_widens_when_later_batches_bring_new_keys(tmp_path):
    recs = [{"prompt": f"p{i}", "chosen": "a", "rejected": "b", "n": i} for i in range(5)]
    recs += [{"prompt": "late", "chosen": "a", "rejected": "b", "n": 0.5, "Demographic Information": "D",
              "User-Generated Content": [{"prompt": "u", "comment": "c", "extra": 1}]}]
    path = tmp_path / "w.parquet"
    assert write_parquet(recs, path, batch_size=2) == 6
    schema = pq.read_schema(path)
    assert str(schema.field("n").type) == "double" and "Demographic Information" in schema.names
    rows = pq.read_table(path).to_pylist()
    assert rows[0]["Demographic Information"] is None and rows[0]["n"] == 0
    assert rows[5]["User-Generated Content"][0]["extra"] == 1 and rows[5]["n"] == 0.5
    examples = list(read_examples(path))
    assert examples[0].user.demographic is None and examples[5].user.demographic == "D"
    assert examples[0].extra == {"n": 0} and examples[5].extra == {"n": 0.5}
    assert not list(tmp_path.glob(".*"))


def test_parquet_rejects_incompatible_column_types_and_leaves_no_file(tmp_path):
    path = tmp_path / "bad.parquet"
    recs = [{"prompt": "p", "chosen": "a", "rejected": "b", "x": 1}, {"prompt": "p", "chosen": "a", "rejected": "b", "x": "s"}]
    with pytest.raises(ValueError, match="column 'x'"):
        write_parquet(recs, path, batch_size=1)
    assert list(tmp_path.iterdir()) == []


def test_json_file_holding_json_lines_is_read_line_by_line(tmp_path):
    path = tmp_path / "lines.json"
    path.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n\n{"prompt": "q", "chosen": "a", "rejected": "b"}\n')
    assert [e.source for e in read_examples(path)] == [f"{path}:1", f"{path}:3"]


def test_json_array_errors_name_the_element_line(tmp_path):
    path = tmp_path / "arr.json"
    write_json_array(RECORDS[:2] + [{"prompt": "", "chosen": "a", "rejected": "b"}], path)
    with pytest.raises(RecordError, match=r"arr\.json:4: field 'prompt'") as info:
        list(read_examples(path))
    assert (info.value.line, info.value.field) == (4, "prompt")
    path.write_text('[\n  {"prompt": "p", "chosen": "a", "rejected": "b"},\n  {"prompt": "p",, }\n]\n')
    with pytest.raises(RecordError, match=r"invalid JSON in array element 2: .*\(line 3, column 18\)"):
        list(read_examples(path))
    path.write_text('[\n  {"prompt": "p", "chosen": "a", "rejected": "b"},\n  {"prompt": "p"')
    with pytest.raises(RecordError, match="truncated"):
        list(read_examples(path))
    path.write_text('[{"prompt": "p", "chosen": "a", "rejected": "b"}, 3]')
    with pytest.raises(RecordError, match="expected a JSON object as array element 2, got a number"):
        list(read_examples(path))


def test_unknown_sources(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        list(read_examples(tmp_path / "missing.jsonl"))
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(RecordError, match="unsupported file type '.csv'"):
        list(read_examples(tmp_path / "x.csv"))


def test_hub_names_are_streamed_from_load_dataset(monkeypatch):
    calls = []

    def fake(name, config=None, *, split, streaming):
        calls.append((name, config, split, streaming))
        return iter([{"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": "p", "chosen": "a"}])

    monkeypatch.setattr(datasets, "load_dataset", fake)
    counts = ReadCounts()
    examples = list(read_examples("org/prefs:validation", on_invalid="skip", counts=counts))
    assert calls == [("org/prefs", None, "validation", True)]
    assert examples[0].source == "org/prefs:validation:1" and (counts.accepted, counts.rejected) == (1, 1)
    list(read_examples("org/prefs", on_invalid="skip"))
    assert calls[-1] == ("org/prefs", None, "train", True)


def test_hub_config_names_may_hold_spaces(monkeypatch):
    calls = []

    def fake(name, config=None, *, split, streaming):
        calls.append((name, config, split))
        return iter([{"prompt": "p", "chosen": "a", "rejected": "b"}])

    monkeypatch.setattr(datasets, "load_dataset", fake)
    (ex,) = read_examples("Pinafore/persona-tailoring:Anthropic HHH:test")
    assert calls == [("Pinafore/persona-tailoring", "Anthropic HHH", "test")]
    assert ex.source == "Pinafore/persona-tailoring:Anthropic HHH:test:1"
    list(read_examples("org/prefs:cfg:"))
    assert calls[-1] == ("org/prefs", "cfg", "train")
    check_source("org/prefs:Anthropic HHH:test")  # a hub name: passes without opening it


def test_hub_failure_is_a_clear_error(monkeypatch):
    def offline(name, config=None, *, split, streaming):
        raise ConnectionError(f"Couldn't reach '{name}' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(FileNotFoundError, match=r"'org/prefs' is not a local file or directory, and loading it from "
                       r"the Hugging Face Hub \(split 'train'\) failed: Couldn't reach"):
        list(read_examples("org/prefs"))


def test_default_rejects_path(tmp_path, monkeypatch):
    f = tmp_path / "data.jsonl"
    f.write_text("")
    assert default_rejects_path(f) == tmp_path / "data.rejects.jsonl"
    assert default_rejects_path(tmp_path) == tmp_path.parent / f"{tmp_path.name}.rejects.jsonl"
    monkeypatch.chdir(tmp_path)
    assert default_rejects_path("org/prefs:train") == tmp_path / "org__prefs__train.rejects.jsonl"


def test_stale_rejects_are_replaced_and_counts_add_up_in_fail_mode(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", RECORDS[:2] + [{"prompt": "p"}] + RECORDS[2:])
    rejects = tmp_path / "r.jsonl"
    rejects.write_text("stale\n")
    counts = validate_file(path, on_invalid="skip", rejects_path=rejects)
    assert (counts.accepted, counts.rejected, counts.seen) == (5, 1, 6) and counts.by_field == {"chosen": 1}
    assert [json.loads(x)["line"] for x in rejects.read_text().splitlines()] == [3]
    counts = ReadCounts()
    with pytest.raises(RecordError, match=r":3: "):
        list(read_examples(path, counts=counts))
    assert (counts.accepted, counts.rejected) == (2, 1)


def test_validate_file_reports_progress(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", RECORDS * 5)
    seen = []
    validate_file(path, progress=lambda c: seen.append(c.seen), every=10)
    assert seen == [10, 20, 25]


def _jsonl(path, records):
    write_jsonl(records, path)
    return path


def _stream(n: int):
    """A generator of n distinct small records (never a list)."""
    for i in range(n):
        yield {"prompt": f"prompt number {i}", "chosen": f"good {i}", "rejected": f"bad {i}",
               "Demographic Information": "x" * 50, "note": i}


def _peak_while_reading(path, skip: bool) -> int:
    tracemalloc.start()
    try:
        kw = {"on_invalid": "skip", "rejects_path": path.with_suffix(".rej")} if skip else {}
        for _ in read_examples(path, **kw):
            pass
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_reading_streams_in_constant_memory(tmp_path):
    small, large = tmp_path / "small.jsonl", tmp_path / "large.jsonl"
    write_jsonl(_stream(2_000), small)
    write_jsonl(_stream(20_000), large)
    assert large.stat().st_size > 9 * small.stat().st_size
    peak_small, peak_large = _peak_while_reading(small, False), _peak_while_reading(large, False)
    # Holding 20k examples would need several MB; streaming stays at the 2k level.
    assert peak_large < 1.5 * peak_small + 50_000, (peak_small, peak_large)
    assert peak_large < 1_000_000


def test_rejects_are_written_incrementally(tmp_path):
    bad = tmp_path / "bad.jsonl"
    write_jsonl(({**r, "chosen": r["rejected"]} for r in _stream(10_000)), bad)
    small = tmp_path / "bad_small.jsonl"
    write_jsonl(({**r, "chosen": r["rejected"]} for r in _stream(1_000)), small)
    peak_small, peak_large = _peak_while_reading(small, True), _peak_while_reading(bad, True)
    assert peak_large < 1.5 * peak_small + 50_000 and peak_large < 1_000_000, (peak_small, peak_large)
    assert sum(1 for _ in open(bad.with_suffix(".rej"), encoding="utf-8")) == 10_000


def test_iter_raw_yields_verbatim_lines_and_errors(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"a": 1}\r\n\n  [1]  \n')
    recs = list(iter_raw(path))
    assert [(r.line, r.raw) for r in recs] == [(1, '{"a": 1}'), (3, "  [1]  ")]
    assert recs[0].value == {"a": 1} and isinstance(recs[1].value, RecordError)


def test_write_examples_rejects_unknown_suffix(tmp_path):
    with pytest.raises(ValueError, match="use .jsonl, .json or .parquet"):
        write_examples([], tmp_path / "x.csv")
