"""One self-contained HTML report (plus a Markdown summary) over result directories.

`build_report(run_dirs, out)` searches every run directory (recursively) for what the other
commands write and shows what it finds:

* `accuracy.json` (`personalign eval accuracy`): accuracy by view and slice with intervals;
* `judge.json` + `judgments.jsonl` (`personalign eval judge`): win/tie/loss bars, ΔPQ, examples;
* `generation.json` + `generations.jsonl` (`personalign eval generate`): run settings, and the
  examples table when no judged pairs exist (the `none` view run as base);
* `metrics.jsonl` (`personalign train`): training curves. One JSON object per line,
  `{"step": int, "<split>/<name>": number, ...}` (split `train` or `eval`; a bare `<name>` counts
  as train); `train/x` and `eval/x` share a panel;
* word saliency JSON (`personalign persona saliency --out`): `{label: [{"word", "saliency",
  "count"}, ...], ...}`, recognised by content under any file name;
* prompt diversity JSON: `{"kind": "diversity", "metric": str, "curves": {name: [{"n": int,
  "d": float, ...}, ...]}}`, recognised by content under any file name;
* reward JSON (`personalign eval reward --out`): `{"kind": "reward", "files": [...], "all": {...}}`.
* persona judge JSON (`personalign persona accuracy --out`, `persona prefer --out`): `{"kind":
  "persona-accuracy", ...}` and `{"kind": "persona-preference", ...}`, drawn as the persona-tailoring
  paper's figures 3 (accuracy with intervals) and 4 (chosen / tie / rejected persona preferred).

Plots are PNGs embedded as `data:` URIs; there are no scripts, no external resources, and a
Content-Security-Policy that forbids both. Every piece of dataset or model text goes through
Jinja2 autoescaping (HTML) or `html.escape` (Markdown).
"""
from __future__ import annotations

import html
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from personalign.errors import EmptyError, OutputError, UserError
from personalign.eval.generate import GENERATIONS_FILE, SETTINGS_FILE
from personalign.eval.judge import PAIRS_FILE, RESULT_FILE, pair_runs
from personalign.files import check_output_file, write_text
from personalign.report import plots

log = logging.getLogger("personalign")

PathLike = str | os.PathLike
ACCURACY_FILE, METRICS_FILE = "accuracy.json", "metrics.jsonl"
MAX_JSON_BYTES = 5_000_000  # larger *.json files (tokenizers, ...) are never results


@dataclass
class Findings:
    """Results found under the run directories, each as (label, content)."""

    accuracy: list[tuple[str, dict]] = field(default_factory=list)
    judges: list[tuple[str, dict, list[dict]]] = field(default_factory=list)
    generations: list[tuple[str, dict, Path]] = field(default_factory=list)
    training: list[tuple[str, list[dict]]] = field(default_factory=list)
    saliency: list[tuple[str, dict]] = field(default_factory=list)
    diversity: list[tuple[str, dict]] = field(default_factory=list)
    rewards: list[tuple[str, dict]] = field(default_factory=list)
    users: list[tuple[str, dict]] = field(default_factory=list)  # user-model accuracy vs shots
    persona_accuracy: list[tuple[str, dict]] = field(default_factory=list)  # `persona accuracy --out`
    persona_preference: list[tuple[str, dict]] = field(default_factory=list)  # `persona prefer --out`
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (file, why): listed in the report

    def empty(self) -> bool:
        return not (self.accuracy or self.judges or self.generations or self.training or self.saliency
                    or self.diversity or self.rewards or self.users or self.persona_accuracy
                    or self.persona_preference)


def _read_jsonl(path: Path, found: Findings) -> list[dict]:
    """The JSON-object lines of `path`; lines that are not (a torn last line, junk) are noted in `found`."""
    rows, bad = [], []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError:
                    row = None
                if isinstance(row, dict):
                    rows.append(row)
                else:
                    bad.append(n)
    except OSError as e:
        found.unreadable.append((str(path), e.strerror or str(e)))
        return []
    if bad:
        found.unreadable.append((str(path), f"{len(bad)} line(s) are not JSON objects (first: line {bad[0]}); "
                                            "the rest is shown"))
    return rows


def _is_saliency(data: object) -> bool:
    return isinstance(data, dict) and bool(data) and all(
        isinstance(v, list) and all(isinstance(r, dict) and {"word", "saliency", "count"} <= r.keys() for r in v)
        for v in data.values())


def collect(run_dirs: list[PathLike]) -> Findings:
    """Every result file under `run_dirs`, labelled by its directory relative to the run dir's parent."""
    found = Findings()
    for given in run_dirs:
        run_dir = Path(given).resolve()
        if not run_dir.is_dir():
            raise UserError("not a directory of results", file=given, option="RUN_DIRS")
        for path in sorted(run_dir.rglob("*")):
            if not path.is_file():
                continue
            label = str(path.parent.relative_to(run_dir.parent))
            if path.name == METRICS_FILE:
                rows = _read_jsonl(path, found)
                if rows:
                    found.training.append((label, rows))
            elif path.suffix == ".json" and path.stat().st_size <= MAX_JSON_BYTES:
                _classify(found, path, label)
    return found


# What the report reads of each result file: a key maps to the shape of its value (`float`: a number;
# None: anything); "*" means every value of a dict. A file missing any of it, or holding a field of
# the wrong kind, is listed as unreadable (file and field), never drawn.
_ESTIMATE = {"value": float, "low": float, "high": float, "n": float}
ACCURACY_SHAPE = {"accuracy": {"*": _ESTIMATE}}
_COUNTS = dict.fromkeys(("n", "wins", "ties", "losses", "unparseable", "missing"), float)
JUDGE_SHAPE = {"rubrics": {"*": {**_COUNTS, "rates": None,
                                 "win_rate": {"value": float, "low": float, "high": float}}},
               "judge": None, "base": None, "test": None}


def _missing(data: object, shape: dict | type | None, where: str = "") -> str | None:
    """The first field of `shape` that `data` lacks or holds as the wrong kind (a dotted path), or None."""
    if shape is None:
        return None
    if shape is float:
        is_number = isinstance(data, (int, float)) and not isinstance(data, bool)
        return None if is_number else f"{where} (not a number)".lstrip(".")
    if not isinstance(data, dict):
        return where or "(top level)"
    for key, inner in shape.items():
        values = data.items() if key == "*" else [(key, data[key])] if key in data else None
        if values is None:
            return f"{where}.{key}".lstrip(".")
        for name, value in values:
            if (field := _missing(value, inner, f"{where}.{name}")) is not None:
                return field.lstrip(".")
    return None


def _classify(found: Findings, path: Path, label: str) -> None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        found.unreadable.append((str(path), f"not valid JSON ({type(e).__name__}: {e})"))
        return
    except OSError as e:
        found.unreadable.append((str(path), e.strerror or str(e)))
        return
    if not isinstance(data, dict):
        if path.name in (ACCURACY_FILE, RESULT_FILE):  # a result file by its name: say why it is not drawn
            found.unreadable.append((str(path), f"not a JSON object (a {type(data).__name__})"))
        return
    if data.get("kind") == "persona-accuracy" and isinstance(data.get("accuracy"), dict):
        found.persona_accuracy.append((label, data))
    elif data.get("kind") == "persona-preference" and isinstance(data.get("rates"), dict):
        found.persona_preference.append((label, data))
    elif path.name == ACCURACY_FILE and data.get("kind") != "user-model-accuracy":
        if (field := _missing(data, ACCURACY_SHAPE)) is not None:
            found.unreadable.append((str(path), f"an accuracy file without field {field}"))
        else:
            found.accuracy.append((label, data))
    elif path.name == RESULT_FILE:
        field = ("kind" if data.get("kind") != "pairwise-judge" else
                 _missing(data, JUDGE_SHAPE) or (data.get("delta_pq") and _missing(data["delta_pq"], _ESTIMATE)))
        if field:
            found.unreadable.append((str(path), f"a judge result without field {field}"))
            return
        pairs = path.with_name(PAIRS_FILE)
        found.judges.append((label, data, _read_jsonl(pairs, found) if pairs.is_file() else []))
    elif path.name == SETTINGS_FILE and path.with_name(GENERATIONS_FILE).is_file():
        found.generations.append((label, data, path.with_name(GENERATIONS_FILE)))
    elif data.get("kind") == "diversity" and isinstance(data.get("curves"), dict):
        found.diversity.append((label, data))
    elif path.name == ACCURACY_FILE and data.get("kind") == "user-model-accuracy":
        if isinstance(data.get("curve"), list) and all(
                isinstance(c, dict) and {"shots", "accuracy", "ci", "n"} <= c.keys() for c in data["curve"]):
            found.users.append((label, data))
        else:
            found.unreadable.append((str(path), "a user-model accuracy file without its curve (shots, accuracy, ci, n)"))
    elif data.get("kind") == "reward":
        found.rewards.append((label, data))

    elif _is_saliency(data):
        found.saliency.append((label, data))


def _examples(found: Findings, limit: int) -> tuple[str, list[dict]]:
    """(caption, up to `limit` distinct rows of persona, prompt, base and test response, outcomes)."""
    if found.judges:
        label, data, rows = found.judges[0]
        caption = f"judged pairs of {label}: base {data['base']}, test {data['test']}"
        examples = [{"persona": r.get("persona"), "prompt": r["prompt"], "base": r["base_response"],
                     "test": r["test_response"],
                     "outcome": ", ".join(f"{k}: {r[k]['outcome']}" for k in ("quality", "personalization") if k in r)}
                    for r in rows]
    elif len(found.generations) >= 2:
        runs = sorted(found.generations, key=lambda g: g[1].get("view", {}).get("view") != "none")
        (base_label, _, base_path), (test_label, _, test_path) = runs[:2]
        pairs, _ = pair_runs(_read_jsonl(base_path, found), _read_jsonl(test_path, found))
        caption = f"generations of {test_label} (test) and {base_label} (base)"
        examples = [{"persona": t.get("persona"), "prompt": t["prompt"], "base": b["response"], "test": t["response"],
                     "outcome": ""} for b, t in pairs]
    else:
        return "", []
    distinct: dict[tuple, dict] = {}
    for e in examples:
        distinct.setdefault(tuple(e.values()), e)
    return caption, list(distinct.values())[:limit]


def _fmt(x: object, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _context(found: Findings, title: str, max_examples: int) -> dict:
    """Everything the template and the Markdown summary show."""
    acc_series = [(f"{label} · {d.get('config', {}).get('view', {}).get('view', '?')}", d["accuracy"])
                  for label, d in found.accuracy]
    accuracy_rows = [
        {"run": label, "view": d.get("config", {}).get("view", {}).get("view", "?"), "mode": d.get("mode", "?"),
         "slice": s, "n": e["n"], "value": _fmt(e["value"]), "ci": f"[{_fmt(e['low'])}, {_fmt(e['high'])}]"}
        for label, d in found.accuracy for s, e in d["accuracy"].items()]
    judge_rows, bars = [], []
    for label, d, _ in found.judges:
        for name, r in d["rubrics"].items():
            e = r["win_rate"]
            decoding = (f"{d.get('config', {}).get('test_decoding') or '?'} vs "
                        f"{d.get('config', {}).get('base_decoding') or '?'}")
            judge_rows.append({"run": label, "compares": decoding, "rubric": name, "n": r["n"], "wins": r["wins"],
                               "ties": r["ties"],
                               "losses": r["losses"], "value": _fmt(e["value"]),
                               "ci": f"[{_fmt(e['low'])}, {_fmt(e['high'])}]", "unparseable": r["unparseable"],
                               "missing": r["missing"]})
            bars.append((f"{label} · {name}", r))
    deltas = [{"run": label, "value": _fmt(d["delta_pq"]["value"]),
               "ci": f"[{_fmt(d['delta_pq']['low'])}, {_fmt(d['delta_pq']['high'])}]", "n": d["delta_pq"]["n"],
               "judge": d["judge"], "base": d["base"], "test": d["test"]}
              for label, d, _ in found.judges if d.get("delta_pq")]
    generation_rows = [{"run": label, "view": s.get("view", {}).get("view"),
                        "template": s.get("view", {}).get("template"),
                        "model": s.get("model"), "records": s.get("counts", {}).get("records"),
                        "settings": ", ".join(f"{k}={v}" for k, v in s.get("generation", {}).items() if k != "stop"),
                        "seconds": s.get("seconds")} for label, s, _ in found.generations]
    reward_rows = [{"run": label, "file": r["name"], "n": r["n"], "reward": _fmt(r["reward"]["value"]),
                    "ci": f"[{_fmt(r['reward']['low'])}, {_fmt(r['reward']['high'])}]", "bleu": _fmt(r["bleu"], 2)}
                   for label, d in found.rewards for r in [*d["files"], d["all"]]]
    training = [(label, uri) for label, rows in found.training if (uri := plots.training_plot(label, rows))]
    final_metrics = []
    for label, rows in found.training:
        last = {k: v for row in rows for k, v in row.items() if k != "step"}  # each metric's last logged value
        final_metrics.append({"run": label, "step": rows[-1].get("step") if rows else None,
                              "metrics": ", ".join(f"{k}={_fmt(v, 4)}" for k, v in last.items())})
    caption, examples = _examples(found, max_examples)
    users_series = [(f"{label} · {d.get('representation', '?')}", d["curve"]) for label, d in found.users]
    users_rows = [{"run": label, "representation": d.get("representation", "?"), "shots": c["shots"], "n": c["n"],
                   "value": _fmt(c["accuracy"]), "ci": f"[{_fmt(c['ci'][0])}, {_fmt(c['ci'][1])}]",
                   "skipped": c.get("skipped", 0)} for label, d in found.users for c in d["curve"]]
    pacc = [(f"{label} · {d.get('persona_field', '?')}", d) for label, d in found.persona_accuracy]
    pacc_rows = [{"run": name, "judge": d.get("judge"), "n": d.get("n_personas"), "value": _fmt(d["accuracy"]["value"]),
                  "ci": f"[{_fmt(d['accuracy']['low'])}, {_fmt(d['accuracy']['high'])}]",
                  "unparseable": d.get("unparseable")} for name, d in pacc]
    ppref_rows = [{"run": label, "judge": d.get("judge"), "n": d.get("n"), "chosen": d.get("chosen_wins"),
                   "ties": d.get("ties"), "rejected": d.get("rejected_wins")} for label, d in found.persona_preference]
    return {
        "persona_accuracy_plot": plots.persona_accuracy_plot(pacc) if pacc else None, "persona_accuracy_rows": pacc_rows,
        "persona_preference_plot": plots.persona_preference_plot(found.persona_preference)
        if found.persona_preference else None, "persona_preference_rows": ppref_rows,
        "users_plot": plots.shots_plot(users_series) if users_series else None, "users_rows": users_rows,
        "title": title, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "accuracy_plot": plots.accuracy_plot(acc_series) if acc_series else None, "accuracy_rows": accuracy_rows,
        "win_plot": plots.win_rate_plot(bars) if bars else None, "judge_rows": judge_rows, "deltas": deltas,
        "generation_rows": generation_rows, "reward_rows": reward_rows,
        "training": training, "final_metrics": final_metrics,
        "saliency": [(label, plots.saliency_plot(label, d), {k: v[:10] for k, v in d.items()})
                     for label, d in found.saliency],
        "diversity": [(label, plots.diversity_plot(label, d["curves"]), d.get("metric"))
                      for label, d in found.diversity],
        "examples_caption": caption, "examples": examples, "unreadable": found.unreadable,
    }


TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>{{ title }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1150px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .6em 0; font-size: .9em; }
th, td { border: 1px solid #ddd; padding: .3em .6em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.examples td { white-space: pre-wrap; max-width: 260px; overflow-wrap: anywhere; }
img { max-width: 100%; display: block; margin: .6em 0; }
.muted { color: #777; }
</style>
</head>
<body>
<h1>{{ title }}</h1>
<p class="muted">generated {{ created }} by personalign</p>

{% if users_rows %}<h2>User models: accuracy vs shots</h2>
<p>Each unseen user gives k pairs (shots); its next pairs are scored by its reward r_u. Intervals resample users.</p>
{% if users_plot %}<img src="{{ users_plot }}" alt="user-model accuracy vs shots with 95% intervals">{% endif %}
<table><tr><th>run</th><th>representation</th><th>shots</th><th>users</th><th>accuracy</th><th>95% CI</th><th>users skipped</th></tr>
{% for r in users_rows %}<tr><td>{{ r.run }}</td><td>{{ r.representation }}</td><td class="num">{{ r.shots }}</td>
<td class="num">{{ r.n }}</td><td class="num">{{ r.value }}</td><td>{{ r.ci }}</td><td class="num">{{ r.skipped }}</td></tr>
{% endfor %}</table>{% endif %}

{% if accuracy_rows %}<h2>Alignment accuracy</h2>
{% if accuracy_plot %}<img src="{{ accuracy_plot }}" alt="accuracy by slice with 95% intervals">{% endif %}
<table><tr><th>run</th><th>view</th><th>mode</th><th>slice</th><th>n</th><th>accuracy</th><th>95% CI</th></tr>
{% for r in accuracy_rows %}<tr><td>{{ r.run }}</td><td>{{ r.view }}</td><td>{{ r.mode }}</td><td>{{ r.slice }}</td>
<td class="num">{{ r.n }}</td><td class="num">{{ r.value }}</td><td>{{ r.ci }}</td></tr>
{% endfor %}</table>{% endif %}

{% if judge_rows %}<h2>Pairwise judge win rates</h2>
<p>Each pair judged in both orders; disagreement = tie; win rate = wins / (wins + losses).</p>
{% if win_plot %}<img src="{{ win_plot }}" alt="wins, ties and losses per rubric">{% endif %}
<table><tr><th>run</th><th>test vs base decoding</th><th>rubric</th><th>pairs</th><th>wins</th><th>ties</th><th>losses</th>
<th>win rate</th><th>95% CI</th>
<th>unparseable outputs</th><th>not judged</th></tr>
{% for r in judge_rows %}<tr><td>{{ r.run }}</td><td>{{ r.compares }}</td><td>{{ r.rubric }}</td><td class="num">{{ r.n }}</td>
<td class="num">{{ r.wins }}</td><td class="num">{{ r.ties }}</td><td class="num">{{ r.losses }}</td>
<td class="num">{{ r.value }}</td><td>{{ r.ci }}</td><td class="num">{{ r.unparseable }}</td><td class="num">{{ r.missing }}</td></tr>
{% endfor %}</table>
{% for d in deltas %}<p>ΔPQ ({{ d.run }}: test <code>{{ d.test }}</code> vs base <code>{{ d.base }}</code>, judge
<code>{{ d.judge }}</code>) = <b>{{ d.value }}</b>, 95% CI {{ d.ci }}, {{ d.n }} pairs.</p>
{% endfor %}{% endif %}

{% if training %}<h2>Training curves</h2>
{% for label, uri in training %}<img src="{{ uri }}" alt="training curves of {{ label }}">{% endfor %}
<table><tr><th>run</th><th>last step</th><th>last logged values</th></tr>
{% for r in final_metrics %}<tr><td>{{ r.run }}</td><td class="num">{{ r.step }}</td><td>{{ r.metrics }}</td></tr>{% endfor %}
</table>{% endif %}

{% if persona_accuracy_plot %}<h2>Persona accuracy</h2>
<img src="{{ persona_accuracy_plot }}" alt="persona accuracy">
<table><tr><th>run · persona</th><th>judge</th><th>personas</th><th>accuracy</th><th>95% CI</th><th>unparseable</th></tr>
{% for r in persona_accuracy_rows %}<tr><td>{{ r.run }}</td><td>{{ r.judge }}</td><td class="num">{{ r.n }}</td>
<td class="num">{{ r.value }}</td><td>{{ r.ci }}</td><td class="num">{{ r.unparseable }}</td></tr>{% endfor %}
</table>{% endif %}

{% if persona_preference_plot %}<h2>Persona preference</h2>
<img src="{{ persona_preference_plot }}" alt="persona preference">
<table><tr><th>run</th><th>judge</th><th>records</th><th>chosen persona</th><th>ties</th><th>rejected persona</th></tr>
{% for r in persona_preference_rows %}<tr><td>{{ r.run }}</td><td>{{ r.judge }}</td><td class="num">{{ r.n }}</td>
<td class="num">{{ r.chosen }}</td><td class="num">{{ r.ties }}</td><td class="num">{{ r.rejected }}</td></tr>{% endfor %}
</table>{% endif %}

{% if saliency %}<h2>Persona word saliency</h2>
{% for label, uri, top in saliency %}<img src="{{ uri }}" alt="word saliency of {{ label }}">
<table><tr>{% for name in top %}<th>{{ name }}: word</th><th>saliency</th><th>count</th>{% endfor %}</tr>
{% for i in range(top.values() | map('length') | max) %}<tr>{% for name, rows in top.items() %}
{% if i < rows | length %}<td>{{ rows[i].word }}</td><td class="num">{{ '%.3f' | format(rows[i].saliency) }}</td>
<td class="num">{{ rows[i].count }}</td>{% else %}<td></td><td></td><td></td>{% endif %}{% endfor %}</tr>
{% endfor %}</table>{% endfor %}{% endif %}

{% if diversity %}<h2>Prompt diversity</h2>
{% for label, uri, metric in diversity %}<img src="{{ uri }}" alt="diversity curves of {{ label }} ({{ metric }})">{% endfor %}
{% endif %}

{% if reward_rows %}<h2>Reward scores</h2>
<table><tr><th>run</th><th>file</th><th>n</th><th>mean σ(reward)</th><th>95% CI</th><th>BLEU</th></tr>
{% for r in reward_rows %}<tr><td>{{ r.run }}</td><td>{{ r.file }}</td><td class="num">{{ r.n }}</td>
<td class="num">{{ r.reward }}</td><td>{{ r.ci }}</td><td class="num">{{ r.bleu }}</td></tr>{% endfor %}
</table>{% endif %}

{% if generation_rows %}<h2>Generation runs</h2>
<table><tr><th>run</th><th>view</th><th>template</th><th>model</th><th>records</th><th>sampling</th><th>seconds (last invocation)</th></tr>
{% for r in generation_rows %}<tr><td>{{ r.run }}</td><td>{{ r.view }}</td><td>{{ r.template }}</td><td>{{ r.model }}</td>
<td class="num">{{ r.records }}</td><td>{{ r.settings }}</td><td class="num">{{ r.seconds }}</td></tr>{% endfor %}
</table>{% endif %}

{% if examples %}<h2>Examples</h2>
<p class="muted">{{ examples_caption }}</p>
<table class="examples"><tr><th>persona</th><th>prompt</th><th>base response</th><th>personalized response</th><th>judged</th></tr>
{% for e in examples %}<tr><td>{{ e.persona or '' }}</td><td>{{ e.prompt }}</td><td>{{ e.base }}</td><td>{{ e.test }}</td>
<td>{{ e.outcome }}</td></tr>
{% endfor %}</table>{% endif %}

{% if unreadable %}<h2>Files that could not be read</h2>
<table><tr><th>file</th><th>why</th></tr>
{% for path, why in unreadable %}<tr><td>{{ path }}</td><td>{{ why }}</td></tr>{% endfor %}
</table>{% endif %}
</body>
</html>
"""

_ENV = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def _md(text: object) -> str:
    """Dataset or model text as one escaped Markdown table cell."""
    return html.escape("" if text is None else str(text)).replace("|", "\\|").replace("\r", "").replace("\n", "<br>")


def _markdown(ctx: dict, html_name: str) -> str:
    lines = [f"# {_md(ctx['title'])}", "", f"Plots and full tables: `{html_name}`.", ""]

    def table(head: list[str], rows: list[list[object]]) -> None:
        lines.extend(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)])
        lines.extend("| " + " | ".join(_md(c) for c in row) + " |" for row in rows)
        lines.append("")

    if ctx["users_rows"]:
        lines += ["## User models: accuracy vs shots", ""]
        table(["run", "representation", "shots", "users", "accuracy", "95% CI", "users skipped"],
              [[r["run"], r["representation"], r["shots"], r["n"], r["value"], r["ci"], r["skipped"]]
               for r in ctx["users_rows"]])
    if ctx["accuracy_rows"]:
        lines += ["## Alignment accuracy", ""]
        table(["run", "view", "mode", "slice", "n", "accuracy", "95% CI"],
              [[r["run"], r["view"], r["mode"], r["slice"], r["n"], r["value"], r["ci"]] for r in ctx["accuracy_rows"]])
    if ctx["judge_rows"]:
        lines += ["## Pairwise judge win rates", ""]
        table(["run", "test vs base decoding", "rubric", "pairs", "wins", "ties", "losses", "win rate", "95% CI",
               "unparseable"],
              [[r["run"], r["compares"], r["rubric"], r["n"], r["wins"], r["ties"], r["losses"], r["value"], r["ci"], r["unparseable"]]
               for r in ctx["judge_rows"]])
        lines += [f"ΔPQ ({_md(d['run'])}) = **{d['value']}**, 95% CI {d['ci']}, {d['n']} pairs." for d in ctx["deltas"]]
        lines.append("")
    if ctx["final_metrics"]:
        lines += ["## Training", ""]
        table(["run", "last step", "last logged values"], [[r["run"], r["step"], r["metrics"]] for r in ctx["final_metrics"]])
    if ctx["persona_accuracy_rows"]:
        lines += ["## Persona accuracy", ""]
        table(["run · persona", "judge", "personas", "accuracy", "95% CI", "unparseable"],
              [[r["run"], r["judge"], r["n"], r["value"], r["ci"], r["unparseable"]] for r in ctx["persona_accuracy_rows"]])
    if ctx["persona_preference_rows"]:
        lines += ["## Persona preference", ""]
        table(["run", "judge", "records", "chosen persona", "ties", "rejected persona"],
              [[r["run"], r["judge"], r["n"], r["chosen"], r["ties"], r["rejected"]] for r in ctx["persona_preference_rows"]])
    for label, _, top in ctx["saliency"]:
        lines += [f"## Persona word saliency: {_md(label)}", ""]
        table(["label", "top words (saliency)"],
              [[name, ", ".join(f"{r['word']} ({r['saliency']:.2f})" for r in rows)] for name, rows in top.items()])
    if ctx["reward_rows"]:
        lines += ["## Reward scores", ""]
        table(["run", "file", "n", "mean σ(reward)", "95% CI", "BLEU"],
              [[r["run"], r["file"], r["n"], r["reward"], r["ci"], r["bleu"]] for r in ctx["reward_rows"]])
    if ctx["examples"]:
        lines += ["## Examples", "", _md(ctx["examples_caption"]), ""]
        table(["persona", "prompt", "base response", "personalized response", "judged"],
              [[e["persona"], e["prompt"], e["base"], e["test"], e["outcome"]] for e in ctx["examples"]])
    if ctx["unreadable"]:
        lines += ["## Files that could not be read", ""]
        table(["file", "why"], [list(row) for row in ctx["unreadable"]])
    return "\n".join(lines)


def build_report(
    run_dirs: list[PathLike], out: PathLike, *, title: str = "personalign report", max_examples: int = 12
) -> Path:
    """Write the HTML report to `out` and a Markdown summary beside it (same name, .md); returns `out`.

    Files that could not be read are listed in the report (and logged as warnings); when nothing
    readable was found at all, no report is written and `EmptyError` says what was searched.
    """
    out = Path(out)
    check_report_output(out)
    found = collect(run_dirs)
    if found.empty():
        first = found.unreadable[0] if found.unreadable else None
        unread = f"; could not read {len(found.unreadable)} file(s), first {first[0]}: {first[1]}" if first else ""
        raise EmptyError("no results found (accuracy.json, judge.json, generation.json, metrics.jsonl, saliency, "
                         f"diversity or reward JSON){unread}", file=", ".join(map(str, run_dirs)))
    for path, why in found.unreadable:
        log.warning("could not read %s: %s (listed in the report)", path, why)
    ctx = _context(found, title, max_examples)
    write_text(out, _ENV.from_string(TEMPLATE).render(**ctx))
    write_text(out.with_suffix(".md"), _markdown(ctx, out.name))
    return out


def check_report_output(out: Path) -> None:
    """The report is an .html file; it and its Markdown sibling can be written."""
    if out.suffix.lower() not in (".html", ".htm"):
        raise OutputError("the report is an HTML file: give --out a .html name", file=out, option="--out")
    for path in (out, out.with_suffix(".md")):
        check_output_file(path, option="--out")
