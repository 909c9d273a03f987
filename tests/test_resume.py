"""Checkpoints and resume on real ranks: a job killed mid-run (any role) and resumed ends with
the model of a run without faults, also on a different number of servers."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from paracel import JobFailed, launch

ROOT = Path(__file__).resolve().parents[1]
ROUNDS, EVERY = 24, 4


def config(out: Path, delay: float = 0.0, every: int | None = EVERY) -> dict:
    return {"algorithm": "tests.checkpoint_jobs:Accumulate", "staleness": 0, "output": str(out),
            "checkpoint_every": every, "params": {"rounds": ROUNDS, "delay": delay}}


def final(out: Path) -> dict:
    return json.loads((out / "final.json").read_text())


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    launch(config(out, every=None), workers=2, servers=2, timeout=60)
    return final(out)


def rank_pids(out: Path) -> dict[int, int]:
    """PMI rank -> pid of the running ranks of the job whose output folder is ``out``."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(out / "config.json").encode() not in cmdline or b"paracel" not in cmdline:
            continue
        for item in environ:
            if item.startswith(b"PMI_RANK="):
                found[int(item[9:])] = int(proc.name)
    return found


def kill_when(tmp_path: Path, job: dict, ready: Path, victim: int) -> None:
    """Run ``job`` with ``prun`` on 2 workers (ranks 0, 1), 2 servers (2, 3) and the clock (4);
    once ``ready`` exists, SIGKILL rank ``victim``: the job must end non-zero within 10 s."""
    (tmp_path / "job.json").write_text(json.dumps(job))
    run = subprocess.Popen([sys.executable, str(ROOT / "prun.py"), "-w", "2", "-p", "2", "-c", str(tmp_path / "job.json"),
                            "-q"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert run.poll() is None and time.monotonic() < deadline, run.stdout.read().decode()
            time.sleep(0.02)
        os.kill(rank_pids(Path(job["output"]))[victim], signal.SIGKILL)
        killed = time.monotonic()
        run.wait(timeout=10)
        assert time.monotonic() - killed < 10
        assert run.returncode != 0
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        run.stdout.close()


@pytest.mark.parametrize("victim", [0, 2, 4], ids=["worker", "server", "clock"])
def test_a_killed_rank_ends_the_job_and_a_resumed_run_ends_as_one_without_faults(tmp_path, reference, victim):
    out = tmp_path / "out"
    kill_when(tmp_path, config(out, delay=0.05), out / "checkpoints" / "clock-00000008" / "MANIFEST.json", victim)
    assert not rank_pids(out)
    assert not (out / "final.json").exists()
    launch(config(out), workers=2, servers=3, resume=out, timeout=60)  # another number of servers
    assert final(out) == reference
    assert final(out)["clock"] == ROUNDS


def test_a_rank_killed_while_checkpointing_leaves_the_previous_checkpoint_to_resume(tmp_path, reference):
    out = tmp_path / "out"
    stalling = {**config(out), "params": {"rounds": ROUNDS, "stall_at": 8}}
    kill_when(tmp_path, stalling, out / "stalled", 0)  # worker 0, inside its checkpoint of clock 8
    torn = out / "checkpoints" / "clock-00000008"
    assert torn.is_dir() and not (torn / "MANIFEST.json").exists()
    launch(config(out), workers=2, servers=1, resume=out, timeout=60)  # from clock 4, the newest whole one
    assert final(out) == reference
    assert json.loads((out / "config.json").read_text())["resume"].endswith("clock-00000004")


def test_resume_needs_a_complete_checkpoint_and_the_same_workers(tmp_path, reference):
    out = tmp_path / "out"
    with pytest.raises(Exception, match="no complete checkpoint"):
        launch(config(out), workers=2, servers=1, resume=out, timeout=60)
    launch(config(out), workers=2, servers=1, timeout=60)
    assert final(out) == reference
    saved = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert saved == [f"clock-{ROUNDS - EVERY:08d}", f"clock-{ROUNDS:08d}"]  # the newest two are kept
    with pytest.raises(JobFailed, match="resume it with 2 workers, not 3"):
        launch(config(out), workers=3, servers=1, resume=out, timeout=60)


SHARED = ROOT.parent / "shared" / "data"
SHIPPED = {  # config, its data, a short run, and the files of its final model
    "mf": ([f"params.train={SHARED / 'movielens-100k' / 'u1.base'}", f"params.test={SHARED / 'movielens-100k' / 'u1.test'}",
            "params.rounds=10"], ["item_factors_0.txt", "item_implicit_0.txt", "user_factors_0.txt", "summary.tsv"]),
    "lda": ([f"params.input={SHARED / 'uci-bow-kos' / 'docword.kos.txt'}", "params.sweeps=10", "params.infer_sweeps=4"],
            ["topics.txt", "doc_topics_0.txt", "summary.tsv"]),
}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_a_shipped_algorithm_resumed_mid_way_ends_bit_for_bit_as_without_faults(tmp_path, name):
    """MF (user rows, generator, round log) and LDA (topic assignments, document counts,
    generator) save their local state: at staleness 0 on one worker, a run resumed from its
    checkpoint of clock 8 of 10 writes exactly the model of a run without checkpoints."""
    overrides, model = SHIPPED[name]
    shipped = ROOT / "configs" / f"{name}.json"
    whole = launch(shipped, workers=1, servers=2, staleness=0, overrides=overrides, output=tmp_path / "whole",
                   timeout=120).output_dir
    out = launch(shipped, workers=1, servers=2, staleness=0, overrides=[*overrides, "checkpoint_every=4"],
                 output=tmp_path / "cut", timeout=120).output_dir
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["clock-00000004", "clock-00000008"]
    for name_ in model:  # as if the job had died after its checkpoint of clock 8
        (out / name_).unlink()
    launch(shipped, workers=1, servers=3, staleness=0, overrides=overrides, resume=out, timeout=120)
    for name_ in model:
        assert (out / name_).read_text() == (whole / name_).read_text(), name_
    assert (out / "run.1.json").exists() and (out / "metrics.1.jsonl").exists()  # the first attempt's record
    logged = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()
              if json.loads(line)["event"] == "metrics"]
    assert min(logged) == 8  # the resumed run logs only its own rounds


def test_an_algorithm_without_save_state_is_not_resumed(tmp_path):
    out = tmp_path / "out"
    lr = ROOT / "configs" / "lr.json"  # the bundled a9a
    launch(lr, workers=2, servers=1, overrides=["checkpoint_every=2"], output=out, timeout=60)
    with pytest.raises(JobFailed, match="LogisticRegression cannot be resumed: it does not implement save_state"):
        launch(lr, workers=2, servers=1, resume=out, timeout=60)
