"""The load-and-kill run of `bench/serve_memory_load.py` at CI size: 50 concurrent users mixing chats and
feedback against the real `personalign serve --memory` process, which is then SIGKILLed mid-write and
restarted on the same database."""
import json
import sys
from pathlib import Path

import pytest
from procs import run

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.duration(23)
def test_fifty_users_lose_nothing_acknowledged_and_never_see_each_other(tmp_path):
    out = tmp_path / "load.json"
    proc = run([sys.executable, str(REPO / "bench" / "serve_memory_load.py"), "--users", "50", "--ops", "4",
                "--writes", "4", "--json", str(out)], timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["mixed"] == 0 and r["missing_from_prompt"] == 0  # no chat mixes users; feedback is used at once
    assert 0 < r["acknowledged_before_kill"] < 200 and r["resent_after_restart"] > 0  # the kill hit mid-write
    assert r["stored"] == 200 and r["lost"] == 0 and r["duplicated"] == 0
    assert proc.stdout.strip().splitlines()[-1].startswith("ratio=")
