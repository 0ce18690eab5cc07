"""The server adapts online: held-out synthetic users send their history pairs one by one to
`personalign serve --memory ... --user-model DIR` (the real CLI in a subprocess on loopback); after
each pair (and before any), their target pair is scored through `POST /v1/rewards`. Prints the
accuracy-vs-feedback curve with 95% intervals over users and the refit latency (each feedback
reply's `refit.ms`, and the whole feedback round trip), p50/p99.

The user model (`--representation`, default latent) is learned first on `--train` synthetic users
(`data synth --seed 21`); the simulated users are `--users` held-out ones (`--seed 22`), `--concurrency`
of them at a time. Generation uses a tiny random model (only rewards and feedback are exercised).

    .venv/bin/python bench/serve_adapt.py                        # 400 training users, 100 simulated
    .venv/bin/python bench/serve_adapt.py --train 60 --users 10  # a quick check

The last line reads `ratio=<accuracy after 4 pairs / population accuracy (0 pairs)> acc_0=... acc_4=...
refit_p50_ms=... refit_p99_ms=... feedback_p50_ms=... feedback_p99_ms=...`.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_memory_load import free_port, wait_until_serving  # noqa: E402

KEY = "adapt-bench-key"


def start_server(work: Path, model_dir: Path, port: int) -> subprocess.Popen:
    from personalign.testing import save_tiny

    env = dict(os.environ, PERSONALIGN_API_KEY=KEY, TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "personalign", "serve", "--model", str(save_tiny(work / "tiny")), "--memory",
           f"sqlite:///{work / 'users.db'}", "--user-model", str(model_dir), "--view", "ica", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=open(work / "server.log", "a"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    return wait_until_serving(proc, port, work / "server.log", KEY)


def simulate(base: str, uid: str, record: dict) -> dict:
    """One user's history pairs one by one; the target pair's ordering after each (and before any)."""
    headers = {"Authorization": f"Bearer {KEY}"}
    probe = {"user": uid, "prompt": record["prompt"], "responses": [record["chosen"], record["rejected"]]}
    right, refit_ms, round_trip_ms = [], [], []
    with httpx.Client(base_url=base, headers=headers, timeout=120) as client:
        for k, pair in enumerate([None, *record["Pair-wise Comparative Feedback"]]):
            if pair is not None:
                t0 = time.perf_counter()
                reply = client.post("/feedback", json={"user": uid, "prompt": pair["prompt"], "chosen": pair["chosen"],
                                                       "rejected": pair["rejected"], "request_id": f"{uid}-{k}"})
                reply.raise_for_status()
                round_trip_ms.append(1000 * (time.perf_counter() - t0))
                refit_ms.append(reply.json()["refit"]["ms"])
            rewards = client.post("/rewards", json=probe)
            rewards.raise_for_status()
            r = rewards.json()["rewards"]
            right.append(1.0 if r[0] > r[1] else 0.5 if r[0] == r[1] else 0.0)
    return {"right": right, "refit_ms": refit_ms, "round_trip_ms": round_trip_ms}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=400)
    ap.add_argument("--users", type=int, default=100)
    ap.add_argument("--representation", default="latent")
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()
    from personalign.curate.synth import synth_records
    from personalign.metrics import bootstrap
    from personalign.records.io import write_jsonl
    from personalign.users.train import UsersTrainConfig, train_user_model

    work = Path(tempfile.mkdtemp(prefix="serve-adapt-"))
    write_jsonl(synth_records(args.train, seed=21), work / "train.jsonl")
    model_dir = work / "user-model"
    train_user_model(UsersTrainConfig(data=str(work / "train.jsonl"), out=str(model_dir),
                                      representation=args.representation), progress=False)
    records = list(synth_records(args.users, seed=22))
    port = free_port()
    proc = start_server(work, model_dir, port)
    started = time.perf_counter()
    try:
        with ThreadPoolExecutor(args.concurrency) as pool:
            runs = list(pool.map(lambda ur: simulate(f"http://127.0.0.1:{port}/v1", f"user-{ur[0]}", ur[1]),
                                 enumerate(records)))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    seconds = time.perf_counter() - started
    right = np.array([r["right"] for r in runs])
    curve = [bootstrap(right[:, k]).as_dict() for k in range(right.shape[1])]
    refit = np.array([m for r in runs for m in r["refit_ms"]])
    trip = np.array([m for r in runs for m in r["round_trip_ms"]])
    p = {f"{name}_p{q}_ms": round(float(np.percentile(v, q)), 1) for name, v in (("refit", refit), ("feedback", trip))
         for q in (50, 99)}
    print(json.dumps({"representation": args.representation, "train_users": args.train, "users": args.users,
                      "curve": curve, **p, "seconds": round(seconds, 1)}))
    for k, c in enumerate(curve):
        print(f"after {k} pairs: accuracy {c['value']:.3f} [{c['low']:.3f}, {c['high']:.3f}] (n={c['n']})")
    a0, a4 = curve[0]["value"], curve[min(4, len(curve) - 1)]["value"]
    print(f"ratio={a4 / max(a0, 1e-9):.3f} acc_0={a0:.3f} acc_4={a4:.3f} " + " ".join(f"{k}={v}" for k, v in p.items()))


if __name__ == "__main__":
    main()
