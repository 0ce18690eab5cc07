from __future__ import annotations

import json

from fake_llm import RuleBackend

from personalign.llm.base import GenerationConfig
from personalign.llm.cache import GenerationCache, generate_cached, generation_key

CFG = GenerationConfig(max_new_tokens=4)


def test_keys_depend_on_every_part():
    base = generation_key("model", "task-v1", {"t": 0}, "hi")
    assert base == generation_key("model", "task-v1", {"t": 0}, "hi")
    assert len({base, generation_key("model2", "task-v1", {"t": 0}, "hi"), generation_key("model", "task-v2", {"t": 0}, "hi"),
                generation_key("model", "task-v1", {"t": 1}, "hi"), generation_key("model", "task-v1", {"t": 0}, "ho")}) == 5


def test_outputs_in_order_duplicates_generated_once_and_progress(tmp_path):
    backend = RuleBackend(str.upper)
    seen = []
    with GenerationCache(tmp_path / "c.jsonl") as cache:
        got = generate_cached(backend, ["a", "b", "a", "c"], CFG, task="t", cache=cache, chunk_size=2,
                              on_progress=seen.append)
    assert got.outputs == ["A", "B", "A", "C"] and (got.generated, got.reused) == (3, 1)
    assert [len(c) for c in backend.calls] == [2, 1] and sum(seen) == 4
    with GenerationCache(tmp_path / "c.jsonl") as cache:
        again = generate_cached(RuleBackend(str.upper), ["c", "d"], CFG, task="t", cache=cache)
    assert again.outputs == ["C", "D"] and (again.generated, again.reused) == (1, 1)


def test_new_settings_or_task_miss_the_cache(tmp_path):
    with GenerationCache(tmp_path / "c.jsonl") as cache:
        generate_cached(RuleBackend(str.upper), ["a"], CFG, task="t", cache=cache)
        assert generate_cached(RuleBackend(str.upper), ["a"], GenerationConfig(max_new_tokens=5), task="t",
                               cache=cache).generated == 1
        assert generate_cached(RuleBackend(str.upper), ["a"], CFG, task="t2", cache=cache).generated == 1
        assert generate_cached(RuleBackend(str.upper), ["a"], CFG, task="t", cache=cache).generated == 0


def test_torn_tail_is_truncated_and_bad_lines_deleted(tmp_path):
    path = tmp_path / "c.jsonl"
    good = json.dumps({"key": "k1", "output": "one"}) + "\n"
    path.write_text(good + "not json\n" + json.dumps({"key": 3, "output": "x"}) + "\n" + '{"key": "k2", "outp')
    with GenerationCache(path) as cache:
        assert cache.entries == {"k1": "one"}
        assert (cache.skipped_lines, cache.truncated_bytes) == (2, len('{"key": "k2", "outp'))
        cache.add([("k2", "two")])
    lines = path.read_text().splitlines()
    assert json.loads(lines[-1]) == {"key": "k2", "output": "two"} and len(lines) == 2  # the bad lines are gone
    with GenerationCache(path) as cache:
        assert cache.entries == {"k1": "one", "k2": "two"} and cache.truncated_bytes == 0
