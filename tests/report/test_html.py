"""The HTML report: every section from the real producers' files, one self-contained file, all
dataset and model text escaped, and a Markdown summary beside it."""
from __future__ import annotations

import base64
import html
import json
from html.parser import HTMLParser

import pytest
from markupsafe import escape
from report_helpers import PAYLOADS

from personalign.errors import EmptyError, UserError
from personalign.report.html import build_report, collect


class Tags(HTMLParser):
    """Every start tag with its attributes."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def test_every_result_kind_is_found(results_dir):
    found = collect([results_dir])
    assert sorted(label.split("/")[-1] for label, _ in found.accuracy) == ["accuracy-ica", "accuracy-none"]
    assert len(found.judges) == 1 and len(found.judges[0][2]) == len(PAYLOADS)
    assert sorted(label.split("/")[-1] for label, _, _ in found.generations) == ["gen-none", "gen-persona"]
    (label, rows), = found.training
    assert label.endswith("train") and {"train/loss", "eval/loss"} <= {k for r in rows for k in r}
    assert len(found.saliency) == 1 and set(found.saliency[0][1]) == {"chosen", "rejected"}
    assert len(found.diversity) == 1 and found.rewards == []
    (label, acc), = found.persona_accuracy
    assert label.endswith("persona") and acc["accuracy"]["value"] == 0.5  # "1" always: chance, by hand
    (_, pref), = found.persona_preference
    assert pref["n"] == len(PAYLOADS) and pref["ties"] == len(PAYLOADS)  # both orders disagree: ties


def test_the_report_has_every_section_with_plots(report_page):
    page = report_page.read_text()
    for heading in ("Alignment accuracy", "Pairwise judge win rates", "Training curves", "Persona accuracy",
                    "Persona preference", "Persona word saliency", "Prompt diversity", "Generation runs", "Examples"):
        assert f"<h2>{heading}</h2>" in page
    alts = [a["alt"] for tag, a in _tags(page) if tag == "img"]
    assert [" ".join(a.split(" ")[:2]) for a in alts] == [
        "accuracy by", "wins, ties", "training curves", "persona accuracy", "persona preference", "word saliency",
        "diversity curves"]
    md = report_page.with_suffix(".md").read_text()
    assert "ΔPQ" in page and "| quality | 6 | 6 | 0 | 0 | 1.000 | [1.000, 1.000] | 0 |" in md


def test_the_longer_answer_judge_wins_every_pair_for_the_persona_run(report_page, results_dir):
    judge = json.loads((results_dir / "judge" / "judge.json").read_text())
    for r in judge["rubrics"].values():
        assert (r["wins"], r["ties"], r["losses"]) == (len(PAYLOADS), 0, 0)
    assert judge["delta_pq"]["value"] == 1.0


def test_the_file_is_self_contained_with_no_script_or_handler(report_page):
    tags = _tags(report_page.read_text())
    names = {tag for tag, _ in tags}
    assert not names & {"script", "iframe", "svg", "link", "object", "embed", "base", "form"}
    assert not [a for _, attrs in tags for a in attrs if a.startswith("on")]
    for tag, attrs in tags:
        if tag == "img":
            head, _, data = attrs["src"].partition(",")
            assert head == "data:image/png;base64" and base64.b64decode(data).startswith(b"\x89PNG")
    assert [a.get("id") for _, a in tags if a.get("id")] == []
    policy = next(a["content"] for t, a in tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy")
    assert "default-src 'none'" in policy


def test_every_payload_is_escaped_in_html_and_markdown(report_page):
    page, md = report_page.read_text(), report_page.with_suffix(".md").read_text()
    for p in PAYLOADS:
        assert p not in page and p not in md
        assert str(escape(p)) in page and html.escape(p) in md


def test_an_empty_directory_is_an_error_and_writes_no_report(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmptyError, match="no results found"):
        build_report([tmp_path / "empty"], tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()
    with pytest.raises(UserError, match="not a directory of results"):
        build_report([tmp_path / "missing"], tmp_path / "r.html")


def _tags(page: str) -> list[tuple[str, dict]]:
    parser = Tags()
    parser.feed(page)
    return parser.tags


def test_a_hand_written_metrics_file_in_the_documented_format_is_plotted(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"step": s, "loss": 1 / s, "eval/loss": 1.5 / s} for s in range(1, 6)] + [{"step": 6, "note": "done"}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    page = build_report([run], tmp_path / "r.html").read_text()
    assert "<h2>Training curves</h2>" in page and 'alt="training curves of run"' in page
    assert "loss=0.2000, eval/loss=0.3000, note=done" in page


def test_malformed_result_files_are_listed_with_file_and_field_and_the_rest_is_drawn(tmp_path):
    """An accuracy.json whose estimate lacks its interval and a judge.json without rubrics: each is listed
    as unreadable (file and field), never an internal error, and the good results are still drawn."""
    (tmp_path / "acc").mkdir()
    (tmp_path / "acc" / "accuracy.json").write_text(json.dumps({"accuracy": {"overall": {"value": 0.5, "n": 3}}}))
    (tmp_path / "judge").mkdir()
    (tmp_path / "judge" / "judge.json").write_text(json.dumps({"kind": "pairwise-judge", "judge": "j", "base": "b",
                                                                "test": "t"}))
    (tmp_path / "div").mkdir()
    (tmp_path / "div" / "d.json").write_text(json.dumps({"kind": "diversity", "metric": "bigram",
                                                         "curves": {"p": [{"n": 1, "d": 0.5}, {"n": 2, "d": 0.7}]}}))
    out = build_report([tmp_path], tmp_path / "report.html", title="t")
    page = out.read_text()
    assert "<h2>Prompt diversity</h2>" in page and "<h2>Alignment accuracy</h2>" not in page
    assert "accuracy.json" in page and "without field accuracy.overall.low" in page
    assert "judge.json" in page and "without field rubrics" in page


@pytest.mark.parametrize("name, body, field", [
    ("accuracy.json", {"mode": "raw", "accuracy": {"all": {"value": "x", "low": 0, "high": 1, "n": 2}}},
     "accuracy.all.value (not a number)"),
    ("accuracy.json", {"mode": "raw", "accuracy": 3}, "without field accuracy"),
    ("accuracy.json", [1, 2], "not a JSON object"),
    ("judge.json", {"judge": "j", "rubrics": {}}, "without field kind"),
    ("judge.json", {"kind": "pairwise-judge", "judge": "j", "base": "b", "test": "t", "rubrics": {"quality": {
        "n": 1, "wins": 1, "ties": 0, "losses": 0, "unparseable": 0, "missing": 0, "rates": {},
        "win_rate": {"value": None, "low": 0, "high": 1}}}}, "rubrics.quality.win_rate.value (not a number)"),
])
def test_a_result_file_of_the_wrong_shape_is_listed_beside_the_good_results(tmp_path, name, body, field):
    """A field of the wrong kind (a string or null where a number belongs), or a file that is not the
    result its name says: listed with file and field, never an internal error; the rest is drawn."""
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / name).write_text(json.dumps(body))
    (tmp_path / "div").mkdir()
    (tmp_path / "div" / "d.json").write_text(json.dumps({"kind": "diversity", "metric": "bigram",
                                                         "curves": {"p": [{"n": 1, "d": 0.5}, {"n": 2, "d": 0.7}]}}))
    page = build_report([tmp_path], tmp_path / "report.html", title="t").read_text()
    assert "<h2>Prompt diversity</h2>" in page
    assert name in page and field in page
