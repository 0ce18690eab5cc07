"""docs/serving.md: the walk-through (collect → export → train → serve) runs as written."""
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = (REPO / "docs" / "serving.md").read_text()


def test_the_loop_walk_through_runs_as_written(default_model_dir, tmp_path):
    (block,) = re.findall(r"```bash\n(.*?)```", DOC, flags=re.S)
    script = tmp_path / "walk.sh"
    script.write_text("set -euo pipefail\nset -m\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n" + block)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", OMP_NUM_THREADS="2")
    env.pop("PERSONALIGN_API_KEY", None)
    proc = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    logs = "".join(p.read_text()[-1500:] for p in tmp_path.glob("loop-serve*.log"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + logs
    records = (tmp_path / "loop" / "feedback.jsonl").read_text().splitlines()
    assert len(records) == 3 and (tmp_path / "loop" / "ica" / "final" / "personalign.json").is_file()
    assert '"deleted":true' in proc.stdout.replace(" ", "")
    assert "change-me" not in logs and "Braiding" not in logs and "users/ann" not in logs  # no key, user text or user path logged
