"""Progress on the clock rank: the plain lines (checked line by line), the bar, a stuck job
naming who waits for whom, ``metrics.jsonl``, and metrics that must be finite."""
from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest

from paracel import JobFailed, ParacelError, launch, progress
from paracel.clock import ClockState
from paracel.metrics import checked_metrics
from paracel.progress import Progress
from paracel.protocol import Done, Report, Sync, Tick

NUMBER = r"[0-9.e+-]+"


def usage(wall: float, compute: float, wait: float, comm: float) -> dict:
    return {"wall": wall, "compute": compute, "wait": wait, "comm": comm, "clock": 0, "hits": 0, "misses": 0,
            "load": [[1, 2, 3, 4]], "staleness": {0: 1}, "host": "h", "pid": 1}


def watched(tmp_path, mode: str = "lines", staleness: int | None = 1) -> tuple[ClockState, io.StringIO]:
    out = io.StringIO()
    return ClockState(2, staleness, Progress(2, staleness, tmp_path, mode, out)), out


def lines(out: io.StringIO) -> list[str]:
    return out.getvalue().splitlines()


def test_lines_one_per_clock_then_per_metrics_row_and_a_summary(tmp_path, monkeypatch):
    monkeypatch.setattr(progress, "LINE_EVERY", 0.0)
    clock, out = watched(tmp_path)
    clock.report_progress(0, Report(total=3))
    clock.tick(0, Tick(usage(1.0, 0.5, 0.25, 0.25)))
    assert lines(out) == []  # the slowest worker is still at clock 0
    clock.tick(1, Tick(usage(1.0, 0.5, 0.25, 0.25)))
    clock.tick(1, Tick(usage(2.0, 1.0, 0.5, 0.5)))
    clock.report_progress(0, Report(step=0, values={"loss": 0.5, "test_rmse": None, "n": 7}))
    clock.tick(0, Tick(usage(2.0, 1.0, 0.5, 0.5)))
    clock.finish(0, Done(usage(3.0, 1.5, 1.0, 0.5)))
    clock.finish(1, Done(usage(3.0, 2.0, 0.5, 0.5)))
    clock.progress.close()
    got = lines(out)
    assert len(got) == 3, got
    assert got[0] == "[paracel] clock 1/3"  # no rate yet: the slowest worker has ended one clock
    # a metrics row, with where the job is: worker 1 is at clock 2, worker 0 at 1
    assert got[1] == "[paracel] step 0: loss=0.5 test_rmse=- n=7 [clock 1/3 (fastest 2)]"
    # once metrics come, clocks no longer get lines of their own; the summary sums both workers
    assert re.fullmatch(rf"\[paracel\] done: clock 2/3, {NUMBER} clocks/s, ETA {NUMBER} s in {NUMBER} s; "
                        r"workers 58% computing, 25% waiting, 17% communicating", got[2])
    events = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == ["start", "total", "tick", "tick", "tick", "metrics", "tick", "done", "done"]
    assert [(e["worker"], e["clock"]) for e in events if e["event"] == "tick"] == [(0, 1), (1, 1), (1, 2), (0, 2)]
    assert events[5] == {**events[5], "worker": 0, "clock": 1, "step": 0,
                         "values": {"loss": 0.5, "test_rmse": None, "n": 7}}
    assert events[-1]["usage"]["wall"] == 3.0 and all(e["t"] >= 0 for e in events)


def test_a_held_worker_names_the_workers_it_waits_for(tmp_path, monkeypatch):
    clock, out = watched(tmp_path, staleness=0)
    clock.tick(1, Tick())
    clock.progress.check(clock.holdups())
    assert lines(out) == []  # held, but not for long
    clock.arrived[1] -= progress.STUCK_AFTER + 1  # as if it had come that much earlier
    clock.progress.check(clock.holdups())
    clock.progress.check(clock.holdups())  # not again until STUCK_REPEAT has passed
    assert len(lines(out)) == 1
    assert re.fullmatch(rf"\[paracel\] waiting: worker 1 \(clock 1\) has waited {NUMBER} s for worker 0 \(clock 0\)",
                        lines(out)[0])
    monkeypatch.setattr(progress, "STUCK_REPEAT", 0.0)
    clock.progress.check(clock.holdups())
    assert len(lines(out)) == 2
    clock.tick(0, Tick())  # worker 0 catches up: both go on, nobody is held
    assert clock.holdups() == []

    barrier, out = watched(tmp_path)
    barrier.sync(0, Sync())
    barrier.arrived[0] -= progress.STUCK_AFTER + 1
    barrier.progress.check(barrier.holdups())
    assert re.fullmatch(rf"\[paracel\] waiting: worker 0 \(clock 0\) has waited {NUMBER} s in sync\(\) for "
                        r"worker 1 \(clock 0\)", lines(out)[0])
    barrier.progress.close()
    waits = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
             if '"waiting"' in line]
    assert waits[0]["waits_for"] == [[1, 0]] and waits[0]["barrier"] and waits[0]["held"] >= progress.STUCK_AFTER


def test_bar_and_quiet(tmp_path):
    clock, out = watched(tmp_path, mode="bar")
    clock.report_progress(0, Report(total=2))
    clock.tick(0, Tick())
    clock.tick(1, Tick())
    clock.report_progress(0, Report(step=0, values={"loss": 0.25}))
    clock.progress.close()
    text = out.getvalue()
    assert "[paracel] step 0: loss=0.25\n" in text and "1/2" in text and "loss=0.25" in text.split("\r")[-1]
    assert text.splitlines()[-1].startswith("[paracel] done: clock 1/2")

    clock, out = watched(tmp_path, mode="quiet")
    clock.tick(0, Tick())
    clock.report_progress(0, Report(step=0, values={"loss": 0.25}))
    clock.progress.close()
    assert out.getvalue() == "" and (tmp_path / "metrics.jsonl").exists()


def test_metrics_must_be_finite_numbers_or_none():
    row = checked_metrics(3, {"a": np.float32(0.5), "b": np.int64(2), "c": None, "d": True})
    assert row == {"a": 0.5, "b": 2, "c": None, "d": True} and type(row["b"]) is int
    with pytest.raises(ParacelError, match=r"metric 'loss' at step 3 is nan"):
        checked_metrics(3, {"loss": float("nan")})
    with pytest.raises(ParacelError, match=r"metric 'x' at step 1 is inf"):
        checked_metrics(1, {"x": np.inf})
    with pytest.raises(TypeError, match=r"metric 'name' at step 0 must be a number"):
        checked_metrics(0, {"name": "abc"})


def test_a_loss_that_turns_nan_ends_the_job(tmp_path):
    with pytest.raises(JobFailed, match=r"metric 'loss' at step 2 is nan") as failed:
        launch({"algorithm": "tests.watch_jobs:Diverges", "output": str(tmp_path)}, workers=2, servers=1,
               timeout=60)
    assert failed.value.returncode != 0
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["status"] == "failed" and record["exit_status"] == failed.value.returncode
