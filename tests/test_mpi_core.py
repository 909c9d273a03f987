"""Integration tests: real MPI jobs (workers, servers and the clock rank) with timeouts."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from paracel import JobFailed, launch

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 60


def run(tmp_path: Path, algorithm: str, params: dict | None = None, workers: int = 3, servers: int = 2,
        staleness: int | None = 0):
    config = {"algorithm": algorithm, "params": params or {}, "staleness": staleness, "output": str(tmp_path / "out")}
    return launch(config, workers=workers, servers=servers, timeout=TIMEOUT)


def result(tmp_path: Path):
    return json.loads((tmp_path / "out" / "result.json").read_text())


def test_concurrent_updates_give_exact_totals(tmp_path):
    job = run(tmp_path, "tests.jobs:ConcurrentAdd", {"nkeys": 2000, "rounds": 4})
    assert job.returncode == 0
    got = result(tmp_path)
    assert got["ints_ok"] and got["ints_shape"] == [2000, 2]
    assert got["strs"] == [12] and got["str_type"] == "int64"
    assert got["single"] == 12 and got["single_type"] == "int"
    assert got["family_size"] == 2000 and got["family_ok"]
    assert got["all_size"] == 2000 + 2000 + 1 and got["odd_keys"] and got["empty"]
    assert got["contains"] == [True, False]


def test_topk_and_remove(tmp_path):
    run(tmp_path, "tests.jobs:TopK", {"k": 4})
    got = result(tmp_path)
    assert got["top"] == [["x2-49", 147.0], ["x2-48", 144.0], ["x2-47", 141.0], ["x2-46", 138.0]]
    assert got["top_all"] == [["y0-0", 1000.0], ["y0-1", 1000.0]]
    assert got["removed"] == [True, False] and got["after"] is False


def test_user_update_function_runs_on_servers(tmp_path):
    run(tmp_path, "tests.jobs:UserFn", workers=2, servers=1)
    assert result(tmp_path) == 10


@pytest.mark.parametrize("mode, message", [
    ("worker", "deliberate failure in solve"),
    ("update_fn", "cannot combine"),
    ("unknown_fn", "unknown update function 'no_such_fn'"),
    ("batched_fn", "unknown update function 'no_such_fn'"),
    ("leaves_early", "sync() cannot complete: worker(s) [1] already returned from solve()"),
])
def test_failures_end_the_job_quickly_with_the_message(tmp_path, mode, message):
    start = time.monotonic()
    with pytest.raises(JobFailed) as info:
        run(tmp_path, "tests.jobs:Raises", {"mode": mode})
    assert time.monotonic() - start < 30
    assert info.value.returncode != 0
    assert message in info.value.output
    assert "worker rank" in info.value.output  # names the failing rank



def test_a_failing_rank_leaves_its_report_and_prun_names_it(tmp_path):
    """MPI_Abort may end mpiexec before the failing rank's stderr is forwarded: its report is
    on disk first, and both launchers name it (a rerun in the same folder forgets old reports)."""
    config = tmp_path / "job.json"
    config.write_text(json.dumps({"algorithm": "tests.jobs:Raises", "params": {"mode": "worker"},
                                  "output": str(tmp_path / "out")}))
    stale = tmp_path / "out" / "failed-rank-7.txt"
    stale.parent.mkdir()
    stale.write_text("paracel: worker rank 7 failed:\nOldError: from an earlier run\n")
    done = subprocess.run([sys.executable, "prun.py", "-w", "2", "-p", "1", "-c", str(config), "--timeout", "60"],
                          cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode != 0 and not stale.exists()
    reports = sorted(p.name for p in (tmp_path / "out").glob("failed-rank-*.txt"))
    assert reports and all(name in ("failed-rank-0.txt", "failed-rank-1.txt") for name in reports)
    assert "deliberate failure in solve" in (tmp_path / "out" / reports[0]).read_text()
    summary = [line for line in done.stderr.splitlines() if line.startswith("prun: ")]
    assert summary[0].startswith("prun: job failed with exit code")
    assert any("worker rank" in line and "deliberate failure in solve" in line for line in summary[1:])

def test_server_keeps_serving_after_a_failed_request(tmp_path):
    run(tmp_path, "tests.jobs:Raises", {"mode": "recovers"}, workers=2, servers=1)
    caught = (tmp_path / "out" / "caught_0.txt").read_text()
    assert "cannot combine 1.0 and 1.0" in caught and "ValueError" in caught


def test_prun_dry_run_and_clean_exit(tmp_path):
    config = tmp_path / "job.json"
    config.write_text(json.dumps({"algorithm": "tests.jobs:UserFn", "output": str(tmp_path / "out")}))
    dry = subprocess.run([sys.executable, "prun.py", "-w", "3", "-p", "2", "-c", str(config), "--staleness", "2",
                          "--dry-run"], cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
    assert dry.returncode == 0
    assert " -n 6 " in dry.stdout and "-m paracel" in dry.stdout and "--servers 2" in dry.stdout
    assert json.loads((tmp_path / "out" / "config.json").read_text())["staleness"] == 2
    real = subprocess.run([sys.executable, "prun.py", "-w", "2", "-p", "1", "-c", str(config), "--timeout", "60"],
                          cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
    assert real.returncode == 0, real.stderr
    assert json.loads((tmp_path / "out" / "result.json").read_text()) == 10


def test_prun_rejects_bad_config_before_starting(tmp_path):
    config = tmp_path / "job.json"
    config.write_text(json.dumps({"algorithm": "tests.jobs:UserFn", "stalenes": 1}))
    done = subprocess.run([sys.executable, "prun.py", "-c", str(config)], cwd=ROOT, capture_output=True,
                          text=True, timeout=TIMEOUT)
    assert done.returncode == 2
    assert "unknown field 'stalenes'" in done.stderr and str(config) in done.stderr


def test_a_killed_worker_ends_the_job(tmp_path):
    start = time.monotonic()
    with pytest.raises(JobFailed) as info:
        run(tmp_path, "tests.jobs:Raises", {"mode": "killed"})
    assert time.monotonic() - start < 30 and info.value.returncode != 0
    assert "signal 9" in str(info.value)
