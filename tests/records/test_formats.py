"""Every input format of personalign.records.formats, each read from a file written in that format."""
import json

import datasets
import pytest

from personalign.curate.synth import synth_records
from personalign.records.dialogue import dialogue_messages
from personalign.records.errors import RecordError
from personalign.records.io import read_examples, write_parquet
from personalign.records.validate import to_record
from personalign.views.build import ViewConfig, build_view
from personalign.views.templates import SUPPORTED, chat_messages


def jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_trl_standard(tmp_path):
    f = jsonl(tmp_path / "standard.jsonl", [{"prompt": "Sky colour?", "chosen": "Blue.", "rejected": "Green."}])
    (ex,) = read_examples(f)
    assert (ex.prompt, ex.responses) == ("Sky colour?", ["Blue.", "Green."])


def test_trl_conversational_one_turn(tmp_path):
    f = jsonl(tmp_path / "conv.jsonl", [{
        "prompt": [{"role": "user", "content": "Sky colour?"}],
        "chosen": [{"role": "assistant", "content": "Blue."}],
        "rejected": [{"role": "assistant", "content": "Green."}]}])
    (ex,) = read_examples(f)
    assert (ex.prompt, ex.responses) == ("Sky colour?", ["Blue.", "Green."])


def test_trl_conversational_multi_turn_keeps_turns_through_the_template(tmp_path):
    turns = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
             {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Sky colour?"}]
    f = jsonl(tmp_path / "conv.jsonl", [{"prompt": turns, "chosen": [{"role": "assistant", "content": "Blue."}],
                                          "rejected": [{"role": "assistant", "content": "Green."}]}])
    (ex,) = read_examples(f)
    assert ex.extra == {"system": "Be brief."}
    assert dialogue_messages(ex.prompt) == turns[1:]
    messages = chat_messages("ica", ex.prompt, "- liked short answers")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[1:3] == turns[1:3] and messages[3]["content"].startswith("# Task\nSky colour?")
    assert to_record(ex)["system"] == "Be brief."


@pytest.mark.parametrize("template,view", [(t, v) for t, views in SUPPORTED.items() for v in views])
def test_multi_turn_keeps_its_turns_in_order_through_every_view_and_template(template, view, tmp_path):
    turns = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello, how can I help?"},
             {"role": "user", "content": "Which language first?"}]
    record = next(iter(synth_records(1, seed=0)))
    record.update(prompt=turns, chosen=[{"role": "assistant", "content": "Python."}],
                  rejected=[{"role": "assistant", "content": "COBOL."}], chosen_persona="Likes brevity.")
    (ex,) = read_examples(jsonl(tmp_path / "conv.jsonl", [record]))
    rendered = build_view(ex, ViewConfig(view=view, template=template))
    positions = [rendered.prompt.find(t["content"]) for t in turns]
    assert -1 not in positions and positions == sorted(positions), rendered.prompt
    if template == "chat":
        assert [m["content"] for m in rendered.messages[-3:-1]] == [t["content"] for t in turns[:2]]
        assert rendered.messages[-1]["content"].count("Which language first?") == 1


def test_trl_implicit_prompt_conversational(tmp_path):
    shared = [{"role": "user", "content": "Sky colour?"}]
    f = jsonl(tmp_path / "implicit.jsonl", [{"chosen": shared + [{"role": "assistant", "content": "Blue."}],
                                              "rejected": shared + [{"role": "assistant", "content": "Green."}]}])
    (ex,) = read_examples(f)
    assert (ex.prompt, ex.responses) == ("Sky colour?", ["Blue.", "Green."])


def test_trl_implicit_prompt_strings_use_trls_rule(tmp_path):
    f = jsonl(tmp_path / "implicit.jsonl", [{"chosen": "The sky is blue.", "rejected": "The sky is green."}])
    (ex,) = read_examples(f)
    assert (ex.prompt, ex.responses) == ("The sky is", [" blue.", " green."])  # TRL keeps the space in the response


def test_raw_hh_rlhf_splits_before_the_last_reply(tmp_path):
    convo = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Sky colour?\n\nAssistant:"
    f = jsonl(tmp_path / "hh.jsonl", [{"chosen": convo + " It is blue.", "rejected": convo + " It is green."}])
    (ex,) = read_examples(f)
    assert ex.prompt == convo and ex.responses == ["It is blue.", "It is green."]  # not split inside "It is"
    assert [t["role"] for t in dialogue_messages(ex.prompt)] == ["user", "assistant", "user"]


def test_raw_hh_rlhf_with_different_earlier_turns_is_refused(tmp_path):
    f = jsonl(tmp_path / "hh.jsonl", [{"chosen": "\n\nHuman: A\n\nAssistant: x", "rejected": "\n\nHuman: B\n\nAssistant: y"}])
    with pytest.raises(RecordError, match="only the last reply may differ") as e:
        list(read_examples(f))
    assert (e.value.line, e.value.field) == (1, "rejected")


def test_scaling_alignment_ranking(tmp_path):
    prefix = ["<|prompter|>Hi<|assistant|>Hello!<|prompter|>Sky colour?<|assistant|>"]
    f = jsonl(tmp_path / "pro.json", [{"prefix": [prefix] * 3, "suffix": ["Grey.", "Blue.", "Green."],
                                        "reward": [0.5, 2.0, -1.0], "sft_index": 1}])
    (ex,) = read_examples(f)
    assert ex.prompt == "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Sky colour?\n\nAssistant:"
    assert ex.responses == ["Blue.", "Grey.", "Green."] and ex.rewards == [2.0, 0.5, -1.0]
    assert ex.extra == {"sft_index": 1}


def test_scaling_alignment_prefixes_must_agree(tmp_path):
    f = jsonl(tmp_path / "pro.jsonl", [{"prefix": [["<|prompter|>a<|assistant|>"], ["<|prompter|>b<|assistant|>"]],
                                         "suffix": ["x", "y"], "reward": [1, 0]}])
    with pytest.raises(RecordError, match="differs from prefix") as e:
        list(read_examples(f))
    assert e.value.field == "prefix[1]"


def test_columns_mapping(tmp_path):
    f = tmp_path / "renamed.parquet"
    write_parquet([{"question": "Sky colour?", "good": "Blue.", "bad": "Green.", "persona": "likes facts"}], f)
    (ex,) = read_examples(f, columns={"question": "prompt", "good": "chosen", "bad": "rejected",
                                      "persona": "chosen_persona"})
    assert (ex.prompt, ex.responses, ex.user.persona("chosen")) == ("Sky colour?", ["Blue.", "Green."], "likes facts")
    with pytest.raises(RecordError, match="already has a 'prompt' field"):
        list(read_examples([{"prompt": "a", "question": "b", "chosen": "x", "rejected": "y"}],
                           columns={"question": "prompt"}))


def test_in_memory_dataset_and_iterables():
    rows = [{"prompt": "Sky colour?", "chosen": "Blue.", "rejected": "Green."},
            {"prompt": [{"role": "user", "content": "Grass?"}], "chosen": [{"role": "assistant", "content": "Green."}],
             "rejected": [{"role": "assistant", "content": "Red."}]}]
    from_list = list(read_examples(rows))
    from_gen = list(read_examples(r for r in rows))
    from_ds = list(read_examples(datasets.Dataset.from_list(rows[:1])))
    assert [e.prompt for e in from_list] == [e.prompt for e in from_gen] == ["Sky colour?", "Grass?"]
    assert from_ds[0].responses == ["Blue.", "Green."] and from_ds[0].source == "<memory>:1"
    with pytest.raises(RecordError, match="expected a dict"):
        list(read_examples([rows[0], "not a record"]))


def test_bad_messages_name_the_field(tmp_path):
    f = jsonl(tmp_path / "conv.jsonl", [{"prompt": [{"role": "user", "content": "x"}],
                                          "chosen": [{"role": "robot", "content": "y"}], "rejected": "z"}])
    with pytest.raises(RecordError) as e:
        list(read_examples(f))
    assert (e.value.field, e.value.line) == ("chosen[0].role", 1)


def test_trl_unpaired_kto_records_with_string_or_message_completions(tmp_path):
    f = jsonl(tmp_path / "unpaired.jsonl", [
        {"prompt": "Sky colour?", "completion": "Blue.", "label": True},
        {"prompt": [{"role": "user", "content": "Sky colour?"}],
         "completion": [{"role": "assistant", "content": "Green."}], "label": False}])
    good, bad = read_examples(f)
    assert (good.responses, good.label, bad.responses, bad.label) == (["Blue."], True, ["Green."], False)
    assert good.rewards is None and bad.rewards is None  # a label is not a reward
    assert to_record(good) == {"prompt": "Sky colour?", "completion": "Blue.", "label": True}


@pytest.mark.parametrize("row, field", [({"prompt": "p", "completion": "c", "label": "yes"}, "label"),
                                        ({"prompt": "p", "completion": "c"}, "label"),
                                        ({"prompt": "p", "chosen": "a", "rejected": "b", "label": True}, "label")])
def test_bad_unpaired_records_name_the_field(row, field, tmp_path):
    with pytest.raises(RecordError) as e:
        list(read_examples(jsonl(tmp_path / "bad.jsonl", [row])))
    assert e.value.field == field and e.value.line == 1
