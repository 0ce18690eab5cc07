from __future__ import annotations

import json
from collections import Counter

import pytest
from pydantic import ValidationError
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast
from typer.testing import CliRunner

from personalign.cli import app
from personalign.records.errors import RecordError
from personalign.records.io import read_examples
from personalign.records.schema import Comment, Example, Pair, UserContext
from personalign.views.build import ViewConfig, ViewCounts, build_view, render_views, select_history
from personalign.views.templates import history_text, render_prompt


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    """A tiny byte-level BPE tokenizer (exact decode round trips), trained on a few sentences."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = ["the user has commented on some posts", "chosen rejected comment post task response", "a b c d e f g"]
    tok.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>")


@pytest.fixture(scope="module")
def psoups(psoups_path) -> list[Example]:
    return list(read_examples(psoups_path))


def n_tokens(tok, text: str) -> int:
    return len(tok(text, add_special_tokens=False)["input_ids"])


def history_example(n_ugc: int = 3, n_pairs: int = 2, **user) -> Example:
    ugc = [Comment(f"ugc post {i}", f"ugc comment {i}") for i in range(n_ugc)]
    pairs = [Pair(f"pair post {i}", f"pair chosen {i}", f"pair rejected {i}") for i in range(n_pairs)]
    user_ctx = UserContext(ugc=ugc, pairs=pairs, **user)
    return Example("Write a haiku.", ["Good answer.", "Bad."], user=user_ctx, source="f.jsonl:3")


# --- templates -------------------------------------------------------------------------------


def test_alignx_ica_exact_layout():
    ex = Example("Hi?", ["a", "b"], user=UserContext(ugc=[Comment("P1", "C1")], pairs=[Pair("P2", "Y", "N")]))
    r = build_view(ex, ViewConfig(view="ica", template="alignx"))
    assert r.prompt == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
        "Generate a task-specific response based on user historical behavior.\n<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n"
        "***Task***\n\nHi?\n\n"
        "***Historical Behavior***\n\n"
        "**This person has commented on some posts:**\n\n1. *Post:*\nP1\n\n*Comment:*\nC1\n\n"
        "**This person has chosen or rejected comments on some posts:**\n\n"
        "1. *Post:*\nP2\n\n*Chosen:*\nY\n\n*Rejected:*\nN\n\n"
        "\n\n***Response:***\n\n<|eot_id|><|start_header_id|>assistant<|end_header_id|>"
    )
    assert (r.history_used, r.history_dropped, r.responses) == (2, 0, ["a", "b"])


def test_alignx_pba_and_alignx_eval_layouts():
    user = UserContext(pairs=[Pair("P", "Y", "N")], profile="Likes humor", demographic="A teacher.")
    ex = Example("Hi?", ["a", "b"], user=user)
    pba = build_view(ex, ViewConfig(view="pba", template="alignx")).prompt
    assert "based on user preferences.\n<|eot_id|>" in pba
    assert "***Task***\n\nHi?\n\n***User Preferences***\n\nLikes humor\n\n***Response:***\n\n<|eot_id|>" in pba
    ica = build_view(ex, ViewConfig(view="ica", template="alignx-eval")).prompt
    assert "based on user historical behavior and preferences.\n<|eot_id|>" in ica
    assert ica.endswith(
        "***Task***\n\n**Post:**\nHi?\n\n***Historical Behavior and User Preferences***\n\n"
        "**This person has chosen or rejected comments on some posts:**\n\n"
        "1. *Post:*\nP\n\n*Chosen:*\nY\n\n*Rejected:*\nN\n\nA teacher.\n\n***Response:***\n\n"
        "<|eot_id|><|start_header_id|>assistant<|end_header_id|>"
    )
    pba_eval = build_view(ex, ViewConfig(view="pba", template="alignx-eval")).prompt
    assert "***Task***\n\n**Post:**\nHi?\n\n***User Preferences***\n\nLikes humor\n\n" in pba_eval


def test_chat_fallback_is_chatml_and_tokenizer_template_is_used(tokenizer):
    ex = Example("Hi?", ["a", "b"], user=UserContext(demographic="A teacher.", pairs=[Pair("P", "Y", "N")]))
    cfg = ViewConfig(view="ica", include_demographic=True)
    assert build_view(ex, cfg).prompt == (
        "<|im_start|>system\nGenerate a task-specific response based on user historical behavior.<|im_end|>\n"
        "<|im_start|>user\n# Task\nHi?\n\n# User history\n"
        "**This person has chosen or rejected comments on some posts:**\n\n"
        "1. *Post:*\nP\n\n*Chosen:*\nY\n\n*Rejected:*\nN\n\n# About the user\nA teacher.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    bare = "<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n"
    assert build_view(ex, ViewConfig(view="none")).prompt == bare
    assert build_view(ex, ViewConfig(view="none"), tokenizer).prompt == bare  # a tokenizer without a chat template
    templated = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer, eos_token="<eos>")
    templated.chat_template = (
        "{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}{% if add_generation_prompt %}[bot]{% endif %}"
    )
    assert build_view(ex, ViewConfig(view="demo"), templated).prompt == (
        "[system]Generate a task-specific response based on information about the user."
        "[user]# Task\nHi?\n\n# About the user\nA teacher.[bot]"
    )


def test_persona_view_plain_and_chat_and_missing_persona():
    user = UserContext(personas={"chosen_persona": "The user likes puns.", "ground_truth_persona": "Gold."})
    ex = Example("Tell a joke.", ["a", "b"], user=user, source="data.jsonl:7")
    assert build_view(ex, ViewConfig(view="persona", template="plain")).prompt == (
        "Prompt: Tell a joke.\nPersona: The user likes puns.\nResponse:"
    )
    assert build_view(ex, ViewConfig(view="none", template="plain")).prompt == "Prompt: Tell a joke.\nResponse:"
    gold = build_view(ex, ViewConfig(view="persona", persona_source="gold")).prompt
    assert "# User persona\nGold." in gold
    with pytest.raises(RecordError, match=r"data\.jsonl:7: field 'rejected_persona'"):
        build_view(ex, ViewConfig(view="persona", persona_source="rejected"))


def test_config_rejects_unsupported_combinations():
    with pytest.raises(ValidationError, match="does not support view 'persona'"):
        ViewConfig(view="persona", template="alignx")
    with pytest.raises(ValidationError, match="template 'plain' does not support view 'ica'"):
        ViewConfig(view="ica", template="plain")
    with pytest.raises(ValidationError, match="greater than 0"):
        ViewConfig(view="ica", max_length=0)
    with pytest.raises(ValueError, match="does not support"):
        render_prompt("plain", "pba", "task", "x")


# --- views on P-Soups ------------------------------------------------------------------------


def test_psoups_pba_uses_the_record_profile_verbatim(psoups, psoups_path):
    raw = json.loads(psoups_path.read_text(encoding="utf-8"))
    counts = ViewCounts()
    rendered = render_views(psoups, ViewConfig(view="pba", template="alignx-eval"))
    for rec, r in zip(raw, rendered, strict=True):
        counts.add(r)
        assert f"***User Preferences***\n\n{rec['profile']}\n\n***Response:***" in r.prompt
        assert r.responses == [rec["chosen"], rec["rejected"]]
    assert counts.summary()["records"] == 600 and counts.no_profile == 0
    chat = build_view(psoups[1], ViewConfig(view="pba"))
    assert f"# User preferences\n{raw[1]['profile']}<|im_end|>" in chat.prompt


def test_psoups_ica_contains_all_four_past_pairs(psoups):
    for ex in psoups[:50]:
        r = build_view(ex, ViewConfig(view="ica", template="alignx"))
        assert r.history_used == 4 and r.slice == "pairs"
        body = r.prompt.split("***Historical Behavior***")[1]
        for i, p in enumerate(ex.user.pairs, 1):
            assert f"{i}. *Post:*\n{p.prompt}\n\n*Chosen:*\n{p.chosen}\n\n*Rejected:*\n{p.rejected}\n\n" in body


# --- PBA fallback ----------------------------------------------------------------------------


def test_pba_without_vectors_renders_like_none_and_counts(dimensions_path):
    ex = history_example()
    cfg = ViewConfig(view="pba", dimensions=str(dimensions_path))
    r = build_view(ex, cfg)
    assert r.prompt == build_view(ex, ViewConfig(view="none")).prompt
    assert r.missing == "profile"
    counts = ViewCounts()
    counts.add(r)
    assert counts.summary()["no_profile"] == 1

    with_vectors = history_example()
    with_vectors.user.ugc[0].direction = [0.5] * 89 + [1]
    r = build_view(with_vectors, cfg)
    assert r.missing is None
    assert r.prompt.endswith("# User preferences\nLikes fashion<|im_end|>\n<|im_start|>assistant\n")


def test_pba_never_uses_the_records_own_direction(dimensions_path):
    """The record's own Preference Direction describes the pair being predicted: using it leaks the label."""
    from personalign.records.dimensions import load_dimensions

    dims = load_dimensions(dimensions_path)
    own = [1.0] * 45 + [0.0] * 45
    for template in ("chat", "alignx", "alignx-eval"):
        ex = history_example(direction=own)
        r = build_view(ex, ViewConfig(view="pba", template=template, dimensions=str(dimensions_path)))
        assert r.missing == "profile"
        assert r.prompt == build_view(ex, ViewConfig(view="none", template=template)).prompt
        leaked = [d.positive for d in dims[:45]] + [d.negative for d in dims[45:]]
        assert not any(phrase in r.prompt for phrase in leaked if len(phrase) > 3)


# --- persona side ----------------------------------------------------------------------------


def persona_example() -> Example:
    personas = {"chosen_persona": "The user wants brevity.", "rejected_persona": "The user wants detail.",
                "retrieved_chosen_persona": "The user is busy.", "retrieved_rejected_persona": "The user is curious."}
    return Example("Explain tides.", ["Moon pulls water.", "Tides are caused by ..."], rewards=[2.0, 1.0],
                   user=UserContext(personas=personas), source="p.jsonl:1")


@pytest.mark.parametrize(("source", "persona", "first"), [
    ("chosen", "The user wants brevity.", "Moon pulls water."),
    ("gold_chosen", "The user wants brevity.", "Moon pulls water."),
    ("rejected", "The user wants detail.", "Tides are caused by ..."),
    ("gold_rejected", "The user wants detail.", "Tides are caused by ..."),
    ("retrieved", "The user is busy.", "Moon pulls water."),
    ("retrieved_rejected", "The user is curious.", "Tides are caused by ..."),
    ("retr_rejected", "The user is curious.", "Tides are caused by ..."),
])
def test_persona_side_decides_the_preferred_response(source, persona, first):
    """A persona belongs to the response it explains: under a rejected persona the rejected one comes first."""
    r = build_view(persona_example(), ViewConfig(view="persona", template="plain", persona_source=source))
    assert r.prompt == f"Prompt: Explain tides.\nPersona: {persona}\nResponse:"
    assert r.responses[0] == first
    assert r.rewards[0] > r.rewards[1]


def test_persona_training_type_all_renders_both_sides_and_system_puts_persona_in_system():
    rows = list(render_views([persona_example()], ViewConfig(view="persona", template="plain", persona_source="all")))
    assert [(r.prompt.split("Persona: ")[1], r.responses[0]) for r in rows] == [
        ("The user wants brevity.\nResponse:", "Moon pulls water."),
        ("The user wants detail.\nResponse:", "Tides are caused by ..."),
    ]
    with pytest.raises(ValueError, match="render_views"):
        build_view(persona_example(), ViewConfig(view="persona", persona_source="all"))
    system = build_view(persona_example(), ViewConfig(view="persona", persona_source="chosen_in_system")).prompt
    assert system.startswith("<|im_start|>system\nYou are talking with this user: The user wants brevity.")
    assert system.endswith("<|im_start|>user\nExplain tides.<|im_end|>\n<|im_start|>assistant\n")
    with pytest.raises(ValidationError, match="needs template 'chat'"):
        ViewConfig(view="persona", template="plain", persona_source="chosen_in_system")


def test_system_is_the_seeds_fixed_generic_persona_in_the_persona_layout():
    """persona-tailoring `model/data_loader.py`: inference type `system` gives every test prompt the
    dataset's one generic persona (SYSTEM_PERSONA_MAP), in the Prompt/Persona layout, whatever the record's."""
    cfg = ViewConfig(view="persona", template="plain", persona_source="system", system_persona="Mnemonic")
    r = build_view(persona_example(), cfg)
    assert r.prompt == ("Prompt: Explain tides.\nPersona: The user prefers indirect, step-by-step mnemonics that "
                        "capture the essence of the vocabulary term.\nResponse:")
    assert r.responses[0] == "Moon pulls water."  # the record's own order: no side is implied
    own = ViewConfig(view="persona", template="plain", persona_source="system", system_persona="The user is brief.")
    assert "Persona: The user is brief.\n" in build_view(persona_example(), own).prompt
    with pytest.raises(ValidationError, match="needs system_persona: BeaverTails, Mnemonic, Anthropic HHH"):
        ViewConfig(view="persona", persona_source="system")


# --- history sampling ------------------------------------------------------------------------


def test_sampling_is_reproducible_and_seeded_by_position():
    examples = [history_example(6, 6) for _ in range(40)]
    cfg = ViewConfig(view="ica", sample_history=True, seed=1)
    first = [r.prompt for r in render_views(examples, cfg)]
    assert first == [r.prompt for r in render_views(examples, cfg)]
    assert build_view(examples[17], cfg, index=17).prompt == first[17]
    other = [r.prompt for r in render_views(examples, cfg.model_copy(update={"seed": 2}))]
    assert sum(a != b for a, b in zip(first, other)) > 10
    assert len(set(first)) > 10


def test_sampling_respects_caps_and_keeps_record_order():
    user = history_example(6, 6).user
    for i in range(300):
        ugc, pairs = select_history(user, ViewConfig(sample_history=True), i)
        assert len(ugc) <= 4 and len(pairs) <= 4 and (ugc or pairs)
        assert ugc == sorted(ugc, key=user.ugc.index) and pairs == sorted(pairs, key=user.pairs.index)
    all_ugc, all_pairs = select_history(user, ViewConfig(sample_history=False), 0)
    assert (len(all_ugc), len(all_pairs)) == (6, 6)


def test_both_zero_rule_takes_all_up_to_four():
    # only UGC (6 items): a draw of u = 0 is "both zero" and takes 4; used counts are never 0, 5 or 6
    user = history_example(6, 0).user
    used = Counter(len(select_history(user, ViewConfig(sample_history=True), i)[0]) for i in range(500))
    assert set(used) == {1, 2, 3, 4}
    assert used[4] > 1.5 * max(used[k] for k in (1, 2, 3))  # P(4) = P(u=4) + P(u=0) = 2/5
    # capped by what exists: 2 pairs and no UGC -> always 1 or 2
    user = history_example(0, 2).user
    assert {len(select_history(user, ViewConfig(sample_history=True), i)[1]) for i in range(200)} == {1, 2}


# --- length ----------------------------------------------------------------------------------


def ica_prompt(ex: Example, keep: int) -> str:
    items = [*ex.user.ugc, *ex.user.pairs][len(ex.user.ugc) + len(ex.user.pairs) - keep :]
    text = history_text([i for i in items if isinstance(i, Comment)], [i for i in items if isinstance(i, Pair)])
    return render_prompt("chat", "ica", ex.prompt, text)


def test_oldest_history_items_are_dropped_first(tokenizer):
    ex = history_example(3, 2)
    resp = max(n_tokens(tokenizer, r) for r in ex.responses) + 1
    limit = n_tokens(tokenizer, ica_prompt(ex, 2)) + resp
    r = build_view(ex, ViewConfig(view="ica", max_length=limit), tokenizer)
    assert (r.history_used, r.history_dropped, r.history_cut, r.overlong) == (2, 3, False, False)
    assert r.prompt == ica_prompt(ex, 2)
    assert "pair post 0" in r.prompt and "ugc post 2" not in r.prompt
    full = n_tokens(tokenizer, ica_prompt(ex, 5)) + resp
    fits_all = build_view(ex, ViewConfig(view="ica", max_length=full), tokenizer)
    assert (fits_all.history_used, fits_all.history_dropped) == (5, 0)
    ignored = build_view(ex, ViewConfig(view="ica", max_length=limit))  # no tokenizer: no truncation
    assert ignored.history_used == 5



def test_the_history_kept_is_the_most_that_fits_at_every_budget_in_few_probes(tokenizer, monkeypatch):
    """Against a brute force over every k: the newest k items kept is the largest k whose whole prompt fits,
    at each budget from no history to all of it; the guided search renders and counts at most a few prompts."""
    import personalign.views.build as build

    ex = history_example(5, 7)
    resp = max(n_tokens(tokenizer, r) for r in ex.responses) + 1
    sizes = [n_tokens(tokenizer, ica_prompt(ex, k)) for k in range(13)]
    probes = []
    original = build._history
    monkeypatch.setattr(build, "_history", lambda items: probes.append(len(items)) or original(items))
    for limit in range(sizes[0] + resp, sizes[-1] + resp, 7):
        probes.clear()
        r = build_view(ex, ViewConfig(view="ica", max_length=limit), tokenizer)
        most = max(k for k in range(13) if sizes[k] + resp <= limit)
        if most == 0:  # no item fits whole: the newest one, left-truncated, when any of it fits
            assert r.history_used == r.history_cut, limit
        else:
            assert (r.history_used, r.history_cut) == (most, False), limit
            assert r.prompt == ica_prompt(ex, most)
        renders = len([n for n in probes if n > 1]) - 1  # the full history once, then the search's probes
        assert renders <= 3, (limit, probes)

def test_newest_item_is_left_truncated_when_it_alone_does_not_fit(tokenizer):
    ex = history_example(1, 1)
    resp = max(n_tokens(tokenizer, r) for r in ex.responses) + 1
    limit = n_tokens(tokenizer, ica_prompt(ex, 1)) - 8 + resp
    r = build_view(ex, ViewConfig(view="ica", max_length=limit), tokenizer)
    assert (r.history_used, r.history_dropped, r.history_cut, r.overlong) == (1, 1, True, False)
    assert limit - 3 <= n_tokens(tokenizer, r.prompt) + resp <= limit
    assert "*Rejected:*\npair rejected 0" in r.prompt and "**This person has chosen" not in r.prompt
    assert "ugc post 0" not in r.prompt
    # room for the prompt without history only: no history at all, not overlong
    exact = n_tokens(tokenizer, ica_prompt(ex, 0)) + resp
    r = build_view(ex, ViewConfig(view="ica", max_length=exact), tokenizer)
    assert (r.history_used, r.history_dropped, r.history_cut, r.overlong) == (0, 2, False, False)
    assert r.prompt == ica_prompt(ex, 0)


def test_overlong_record_is_kept_and_flagged(tokenizer):
    ex = history_example(2, 2)
    tiny = ViewConfig(view="ica", max_length=5)
    r = build_view(ex, tiny, tokenizer)
    assert r.overlong and (r.history_used, r.history_dropped) == (0, 4)
    assert r.prompt == ica_prompt(ex, 0) and r.responses == ex.responses
    profiled = Example("Q", ["a", "b"], user=UserContext(profile="Likes humor"))
    pba = build_view(profiled, ViewConfig(view="pba", max_length=5), tokenizer)
    assert pba.overlong and "Likes humor" in pba.prompt

    examples = [history_example(1, 1), ex, Example("short", ["a", "b"])]
    counts = ViewCounts()
    rendered = list(render_views(examples, tiny.model_copy(update={"max_length": 60}), tokenizer))
    for r in rendered:
        counts.add(r)
    assert len(rendered) == 3
    summary = counts.summary()
    assert summary["records"] == 3 and summary["overlong"] == 2 and summary["history_dropped"] == 6
    assert summary["history_used"] == 0 and summary["truncated"] == 2


# --- CLI -------------------------------------------------------------------------------------


def test_build_views_cli(psoups_path, tmp_path, tokenizer):
    tokenizer.save_pretrained(tmp_path / "tok")
    data = tmp_path / "psoups40.json"
    data.write_text(json.dumps(json.loads(psoups_path.read_text(encoding="utf-8"))[:40]), encoding="utf-8")
    out = tmp_path / "views.jsonl"
    args = ["data", "build-views", str(data), "--view", "ica", "--template", "alignx-eval", "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--tokenizer", str(tmp_path / "tok"), "--max-length", "800"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 40
    assert {"prompt", "responses", "rewards", "source", "view", "template", "history_used", "overlong"} <= rows[0].keys()
    assert (rows[0]["view"], rows[0]["template"], rows[0]["source"]) == ("ica", "alignx-eval", f"{data}:1")
    assert sum(r["history_dropped"] for r in rows) > 0 and not any(r["overlong"] for r in rows)
    for r in rows:
        assert n_tokens(tokenizer, r["prompt"]) + max(n_tokens(tokenizer, x) for x in r["responses"]) + 1 <= 800
    assert "history dropped" in result.output

    bad = CliRunner().invoke(app, [*args, "--max-length", "300"])
    assert bad.exit_code == 2 and "--tokenizer" in bad.output
    bad = CliRunner().invoke(app, [*args[:-4], "--view", "persona", "--template", "alignx", "--out", str(out)])
    assert bad.exit_code == 2 and "does not support view 'persona'" in bad.output


def test_build_views_cli_lists_the_rejected_response_first_under_a_rejected_persona(tmp_path):
    data = tmp_path / "p.jsonl"
    data.write_text(json.dumps({"prompt": "Q?", "chosen": "kind words", "rejected": "harsh words",
                                "chosen_persona": "The user is gentle.", "rejected_persona": "The user is blunt."}) + "\n")
    out = tmp_path / "v.jsonl"
    res = CliRunner().invoke(app, ["data", "build-views", str(data), "--view", "persona", "--template", "plain",
                                   "--persona-source", "rejected", "--out", str(out)])
    assert res.exit_code == 0, res.output
    row = json.loads(out.read_text())
    assert row["responses"] == ["harsh words", "kind words"] and "Persona: The user is blunt." in row["prompt"]


def test_raw_template_keeps_the_prompt_as_given_and_tokenizes_it_as_trl(tokenizer):
    """Data already rendered (TRL's standard format): the prompt is neither wrapped nor changed, responses
    are tokenized on their own with EOS after them, and no view other than none is accepted."""
    from personalign.records.tokens import tokenize_pair
    from personalign.views.templates import response_convention

    ex = Example(prompt="<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n", responses=["Hello!", "Go away."])
    r = build_view(ex, ViewConfig(view="none", template="raw"))
    assert r.prompt == ex.prompt and r.messages is None
    joiner, eos = response_convention("raw")
    t = tokenize_pair(tokenizer, r.prompt, r.responses, joiner=joiner, eos=eos)
    assert t.prompt_ids == tokenizer(ex.prompt, add_special_tokens=False)["input_ids"]
    assert t.response_ids[0] == tokenizer("Hello!", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    with pytest.raises(ValueError, match="does not support view 'ica'"):
        ViewConfig(view="ica", template="raw")
