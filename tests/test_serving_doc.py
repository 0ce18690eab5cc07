"""docs/serving.md: the walk-through (collect → export → train → serve) runs as written, on two ports
the OS picked (another pair if one was taken meanwhile); its servers die with the script's process tree."""
import os
import re
import shutil
import sys
from pathlib import Path

import pytest
from procs import ADDRESS_IN_USE, free_port, run

REPO = Path(__file__).resolve().parents[1]
DOC = (REPO / "docs" / "serving.md").read_text()


@pytest.mark.duration(28)
def test_the_loop_walk_through_runs_as_written(default_model_dir, tmp_path):
    (block,) = re.findall(r"```bash\n(.*?)```", DOC, flags=re.S)
    assert "8765" not in block.replace("${PORT:-8765}", ""), "the walk-through takes its ports from PORT and PORT2"
    script = tmp_path / "walk.sh"
    script.write_text("set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n" + block)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", OMP_NUM_THREADS="2")
    env.pop("PERSONALIGN_API_KEY", None)
    for _ in range(3):
        for log in tmp_path.glob("loop-serve*.log"):
            log.unlink()
        shutil.rmtree(tmp_path / "loop", ignore_errors=True)
        proc = run(["bash", str(script)], cwd=tmp_path, env=dict(env, PORT=str(free_port()), PORT2=str(free_port())),
                   timeout=900)
        logs = "".join(p.read_text()[-1500:] for p in tmp_path.glob("loop-serve*.log"))
        if proc.returncode == 0 or not any(s in logs for s in ADDRESS_IN_USE):
            break
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + logs
    records = (tmp_path / "loop" / "feedback.jsonl").read_text().splitlines()
    assert len(records) == 3 and (tmp_path / "loop" / "ica" / "final" / "personalign.json").is_file()
    assert '"deleted":true' in proc.stdout.replace(" ", "")
    assert "change-me" not in logs and "Braiding" not in logs and "users/ann" not in logs  # no key, user text or user path logged
