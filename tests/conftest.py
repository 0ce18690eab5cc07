"""Shared fixtures: locations of the shared real data, and small helpers. Test modules import the
rule-based fake LLM backend from `tests/fake_llm.py` (this directory is put on the import path)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from personalign.records.dimensions import shared_data_dir

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))


def pytest_configure(config):
    config.addinivalue_line("markers", "duration(seconds): a long test, started first (see pytest_collection_modifyitems)")


def pytest_collection_modifyitems(config, items):
    """Long tests (a `duration` mark: seconds on the 2-core CI machine with two workers) start first, spread
    over the workers. pytest-xdist's `worksteal` gives worker i the i-th contiguous slice of this order and
    steals from the ends of queues, so each slice here begins with its share of the long tests (the longest
    to the least loaded slice) and none of them is left to run alone at the end of the suite; the slices after
    the first begin with long tests that do not wait for the embedded model the first one prepares. Shuffled runs
    (`-p random_order`) reorder afterwards."""
    def seconds(item) -> float:
        mark = item.get_closest_marker("duration")
        return float(mark.args[0]) if mark else 0.0

    workers = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    sizes, left = [], len(items)
    for i in range(workers):  # the slice sizes worksteal sends (`check_schedule`)
        sizes.append(left // (workers - i))
        left -= sizes[-1]
    long = sorted((item for item in items if seconds(item) > 0), key=seconds, reverse=True)
    short = [item for item in items if seconds(item) == 0]
    lanes, load = [[] for _ in sizes], [0.0] * len(sizes)
    for item in long:
        lane = min((i for i in range(len(sizes)) if len(lanes[i]) < sizes[i]), key=lambda i: load[i])
        lanes[lane].append(item)
        load[lane] += seconds(item)
    for lane in lanes[1:]:  # the first slice's first test prepares the embedded model: the others start elsewhere
        lane.sort(key=lambda item: "default_model_dir" in getattr(item, "fixturenames", ()))
    for lane, size in zip(lanes, sizes):
        take = size - len(lane)
        lane += short[:take]
        del short[:take]
    items[:] = [item for lane in lanes for item in lane]


@pytest.fixture
def write_records(tmp_path):
    """Write records as JSONL under tmp_path and return the path."""

    def write(records: list[dict], name: str = "data.jsonl") -> Path:
        path = tmp_path / name
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        return path

    return write


@pytest.fixture(scope="session")
def shared_data() -> Path:
    d = shared_data_dir()
    if d is None:
        pytest.fail("shared/data (AlignX dimensions, P-Soups) not found beside the repository")
    return d


@pytest.fixture(scope="session")
def psoups_path(shared_data: Path) -> Path:
    return shared_data / "p-soups" / "friendly_unfriendly.json"


@pytest.fixture(scope="session")
def dimensions_path(shared_data: Path) -> Path:
    return shared_data / "alignx_dimensions.json"


# Models: tiny random LMs for fast tests, and the embedded default prepared once into a
# repository-local cache that later runs reuse. The hub is never contacted.

os.environ.setdefault("PERSONALIGN_HOME", str(REPO / ".cache" / "personalign-test"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine they cost up to 20x."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_lm():
    """(model, tokenizer) of the default tiny llama; do not train or mutate it."""
    from personalign.testing import tiny_causal_lm

    return tiny_causal_lm()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A saved tiny model directory, identical to `tiny_causal_lm()`."""
    from personalign.testing import save_tiny

    return save_tiny(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    """The prepared embedded default model (~40 s the first time, then reused)."""
    from personalign.models.loading import prepare_default_model

    return prepare_default_model(progress=False)


@pytest.fixture()
def free_port() -> int:
    """A loopback port the OS picked as free; pass it explicitly, never a fixed one. A child that binds it
    later may find it taken: launches retry on conflict (`tests/procs.py`)."""
    from procs import free_port

    return free_port()


@pytest.fixture(scope="session")
def synth_users(tmp_path_factory) -> dict[str, Path]:
    """Synthetic users (`data synth`): 100 to train on, 60 held out, with their MiniLM features cached
    beside them (computed once per session), and a `mean-diff` and a `latent` user model trained on them."""
    from personalign.curate.synth import synth_records
    from personalign.records.io import write_jsonl
    from personalign.users.train import UsersTrainConfig, train_user_model

    def build(root: Path) -> None:
        write_jsonl(synth_records(100, seed=21), root / "train.jsonl")
        write_jsonl(synth_records(60, seed=22), root / "test.jsonl")
        for rep in ("mean-diff", "latent"):
            train_user_model(UsersTrainConfig(data=str(root / "train.jsonl"), out=str(root / rep), representation=rep,
                                              fit={"max_steps": 300}), progress=False)

    root = built_once(tmp_path_factory, "synth-users", build)
    return {"train": root / "train.jsonl", "test": root / "test.jsonl", "mean-diff": root / "mean-diff",
            "latent": root / "latent"}


def built_once(tmp_path_factory, name: str, build) -> Path:
    """A directory `build(dir)` fills once per run: under pytest-xdist the workers share it (the first
    builds it under a file lock, the others wait and reuse it), so a ~40 s fixture is not paid per worker.
    Tests must not modify it."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # shared by the workers of this run, and by this run only
    root, done = base / f"shared-{name}", base / f"shared-{name}.done"
    with FileLock(str(base / f"shared-{name}.lock")):
        if not done.exists():
            root.mkdir(exist_ok=True)
            build(root)
            done.touch()
    return root


@pytest.fixture(params=["sqlite", "postgresql"])
def memory_url(request, tmp_path):
    """A database URL for a fresh, empty memory store: SQLite, then PostgreSQL (skipped, with the
    reason, where no server answers; a failure under CI=true). See tests/memdb.py."""
    import memdb

    yield from memdb.memory_url(request, tmp_path)
