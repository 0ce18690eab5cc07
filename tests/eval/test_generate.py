"""Generation: the view's prompt goes to the backend, rows and settings are written, and a run that
is interrupted or killed continues from its cache without generating anything twice."""
from __future__ import annotations

import json
import signal
import sys
import textwrap
from collections.abc import Sequence

import pytest
from procs import launched, wait_for

from personalign.eval.generate import (
    CACHE_FILE,
    GENERATIONS_FILE,
    SETTINGS_FILE,
    GenerateConfig,
    generate_responses,
    read_generations,
)
from personalign.llm.base import BackendConfig, GenerationConfig
from personalign.llm.local import LocalBackend
from personalign.records.errors import RecordError
from personalign.records.io import read_examples, write_jsonl
from personalign.views.build import ViewConfig, build_view


class EchoBackend:
    """Answers "echo: <last user message>"; raises after `fail_after` requests; logs what it generated."""

    identity = "fake-echo"

    def __init__(self, fail_after: int | None = None):
        self.fail_after = fail_after
        self.generated: list[str] = []

    def generate(self, requests: Sequence, config: GenerationConfig, *, progress: bool = True) -> list[str]:
        out = []
        for r in requests:
            if self.fail_after is not None and len(self.generated) >= self.fail_after:
                raise KeyboardInterrupt
            text = r if isinstance(r, str) else r[-1]["content"]
            self.generated.append(text)
            out.append(f"echo: {text}")
        return out


def records(n: int) -> list[dict]:
    return [{"prompt": f"Question number {i}?", "chosen": f"good answer {i}", "rejected": f"bad answer {i}",
             "ground_truth_persona": f"The user is person {i}."} for i in range(n)]


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "data.jsonl"
    write_jsonl(records(6), path)
    return path


def config(data, out, **kw) -> GenerateConfig:
    return GenerateConfig(data=str(data), out=str(out), view=ViewConfig(view="persona", persona_source="gold"),
                          chunk_size=1, **kw)


def test_rows_hold_prompt_fields_persona_response_and_view_and_settings_hold_no_secret(data, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-value-123")
    cfg = config(data, tmp_path / "run", backend=BackendConfig(kind="openai", model="gpt-x"),
                 generation=GenerationConfig(max_new_tokens=17, temperature=0.7, top_p=0.9, seed=3))
    run = generate_responses(cfg, EchoBackend())
    rows = read_generations(run)
    assert [r["index"] for r in rows] == list(range(6))
    first = rows[0]
    assert first["prompt"] == "Question number 0?" and first["persona"] == "The user is person 0."
    assert first["view"] == "persona" and first["chosen"] == "good answer 0" and first["source"].endswith(":1")
    # a backend without a tokenizer gets the chat template's messages, persona block included
    assert first["view_prompt"][-1]["role"] == "user" and "The user is person 0." in first["view_prompt"][-1]["content"]
    assert first["response"] == "echo: " + first["view_prompt"][-1]["content"]
    settings = json.loads((run / SETTINGS_FILE).read_text())
    assert settings["generation"] == {"max_new_tokens": 17, "temperature": 0.7, "top_p": 0.9, "top_k": 0, "stop": [],
                                      "seed": 3}
    assert settings["view"]["view"] == "persona" and settings["counts"] == {"records": 6, "generated": 6, "reused": 0}
    assert settings["backend"]["api_key_env"] == "OPENAI_API_KEY"
    assert "sk-secret-value-123" not in "".join(p.read_text() for p in run.iterdir())


def test_a_local_backend_gets_the_rendered_view_prompt(data, tmp_path, tiny_lm):
    model, tokenizer = tiny_lm
    backend = LocalBackend(model, tokenizer, batch_size=4)
    gen = GenerationConfig(max_new_tokens=5)
    run = generate_responses(config(data, tmp_path / "run", generation=gen, limit=3), backend)
    rows = read_generations(run)
    view = ViewConfig(view="persona", persona_source="gold")
    expected = [build_view(ex, view, tokenizer, i).prompt for i, ex in enumerate(read_examples(data))][:3]
    assert [r["view_prompt"] for r in rows] == expected
    assert [r["response"] for r in rows] == backend.generate(expected, gen, progress=False)


def test_an_interrupted_run_continues_and_generates_every_item_once(data, tmp_path):
    out = tmp_path / "run"
    first = EchoBackend(fail_after=4)
    with pytest.raises(KeyboardInterrupt, match=""):
        generate_responses(config(data, out), first)
    assert not (out / GENERATIONS_FILE).exists()
    second = EchoBackend()
    generate_responses(config(data, out), second)
    assert len(first.generated) == 4 and len(second.generated) == 2
    assert sorted(first.generated + second.generated) == sorted(set(first.generated + second.generated))
    assert len(read_generations(out)) == 6
    third = EchoBackend()
    generate_responses(config(data, out), third)
    assert third.generated == []


KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    from personalign.views.build import ViewConfig
    from personalign.eval.generate import GenerateConfig, generate_responses

    class Parking:  # answers 2 requests, then says so and parks until killed: the kill never races the work
        identity = "fake-echo"
        calls = 0
        def generate(self, requests, config, *, progress=True):
            Parking.calls += 1
            if Parking.calls > 2:
                open(sys.argv[3], "w").close()
                time.sleep(600)
            return ["echo: " + (r if isinstance(r, str) else r[-1]["content"]) for r in requests]

    cfg = GenerateConfig(data=sys.argv[1], out=sys.argv[2], chunk_size=1,
                         view=ViewConfig(view="persona", persona_source="gold"))
    generate_responses(cfg, Parking())
""")


def test_a_killed_run_resumes_from_its_cache(data, tmp_path):
    out = tmp_path / "run"
    script = tmp_path / "slow.py"
    script.write_text(KILL_SCRIPT)
    with launched([sys.executable, str(script), str(data), str(out), str(tmp_path / "parked")]) as proc:
        wait_for(tmp_path / "parked", proc, timeout=300)
    assert proc.returncode == -signal.SIGKILL
    cache = out / CACHE_FILE
    stored = len(cache.read_text().splitlines())
    assert stored == 2, "the run parks after 2 stored generations"
    backend = EchoBackend()
    generate_responses(config(data, out), backend)
    assert len(backend.generated) == 6 - stored
    rows = read_generations(out)
    assert [r["response"] for r in rows] == ["echo: " + r["view_prompt"][-1]["content"] for r in rows]
    keys = [json.loads(line)["key"] for line in cache.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 6


def test_few_shot_persona_tailoring_prefixes_k_training_exemplars_and_stops_at_the_next_prompt(data, tmp_path):
    train = tmp_path / "train.jsonl"
    write_jsonl([{"prompt": f"Train {i}?", "chosen": f"tc {i}", "rejected": f"tr {i}",
                  "chosen_persona": f"The user likes {i}.", "rejected_persona": f"The user hates {i}."}
                 for i in range(5)], train)
    backend = EchoBackend()
    cfg = GenerateConfig(data=str(data), out=str(tmp_path / "fs"), limit=2, few_shot=3, shots_from=str(train),
                         view=ViewConfig(view="persona", template="plain", persona_source="gold"), chunk_size=1)
    rows = read_generations(generate_responses(cfg, backend))
    request = rows[0]["view_prompt"]
    shots = request.split("Prompt: Question number 0?")[0].split("\n\n")[:-1]
    assert len(shots) == 3
    for shot in shots:
        i = shot.split("Train ")[1][0]
        assert shot == f"Prompt: Train {i}?\nPersona: The user likes {i}.\nResponse: tc {i}"
    assert request.endswith("Prompt: Question number 0?\nPersona: The user is person 0.\nResponse:")
    assert rows[1]["view_prompt"].startswith("\n\n".join(shots))  # the same exemplars for every record
    assert json.loads((tmp_path / "fs" / "generation.json").read_text())["generation"]["stop"] == ["\nPrompt:"]
    # rejected-side inference: exemplars show rejected personas with the responses they prefer
    rej = GenerateConfig(**{**cfg.model_dump(), "out": str(tmp_path / "fs-r2"),
                            "view": {"view": "persona", "template": "plain", "persona_source": "rejected"}})
    write_jsonl([{**r, "rejected_persona": "The user is contrary."} for r in records(2)], tmp_path / "d2.jsonl")
    rej = rej.model_copy(update={"data": str(tmp_path / "d2.jsonl")})
    rows = read_generations(generate_responses(rej, EchoBackend()))
    assert "Persona: The user hates" in rows[0]["view_prompt"] and "Response: tr " in rows[0]["view_prompt"]
    assert rows[0]["chosen"] == "bad answer 0"  # under a rejected persona the rejected response is the target
    with pytest.raises(ValueError, match="need view 'persona', template 'plain'"):
        GenerateConfig(data="d", out="o", few_shot=2, shots_from="t")
    with pytest.raises(ValueError, match="only 5 records carry a chosen persona"):
        generate_responses(cfg.model_copy(update={"few_shot": 6, "out": str(tmp_path / "x")}), EchoBackend())


@pytest.mark.parametrize("shots_type", ["chosen", "rejected", "all"])
def test_few_shot_as_the_seed_runs_it_uses_every_record_with_the_training_types_side(shots_type, data, tmp_path):
    """persona-tailoring `Few-Shot/inference.py` with `load_few_shot_data`: the whole few-shot split in
    order, exemplars "Prompt/Persona/Response" joined by blank lines, the side set by the training type
    (all: every chosen exemplar, then every rejected one), whatever the inference type."""
    train = tmp_path / "train.jsonl"
    write_jsonl([{"prompt": f"Train {i}?", "chosen": f"tc {i}", "rejected": f"tr {i}",
                  "chosen_persona": f"The user likes {i}.", "rejected_persona": f"The user hates {i}."}
                 for i in range(4)], train)
    cfg = GenerateConfig(data=str(data), out=str(tmp_path / shots_type), limit=1, shots_from=str(train),
                         shots_type=shots_type, chunk_size=1,  # inference type gold: the chosen side
                         view=ViewConfig(view="persona", template="plain", persona_source="gold"))
    request = read_generations(generate_responses(cfg, EchoBackend()))[0]["view_prompt"]
    chosen = [f"Prompt: Train {i}?\nPersona: The user likes {i}.\nResponse: tc {i}" for i in range(4)]
    rejected = [f"Prompt: Train {i}?\nPersona: The user hates {i}.\nResponse: tr {i}" for i in range(4)]
    shots = {"chosen": chosen, "rejected": rejected, "all": chosen + rejected}[shots_type]
    assert request.startswith("\n\n".join(shots) + "\n\nPrompt: Question number 0?\nPersona: ")
    write_jsonl([{"prompt": "p", "chosen": "a", "rejected": "b", "chosen_persona": "x"}], tmp_path / "half.jsonl")
    if shots_type != "chosen":
        with pytest.raises(RecordError, match="every record's rejected persona"):
            generate_responses(cfg.model_copy(update={"shots_from": str(tmp_path / "half.jsonl"),
                                                      "out": str(tmp_path / "h")}), EchoBackend())
