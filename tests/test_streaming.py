"""Streaming jobs on real ranks: how a stream ends, the pull limiter, followed files and stdin,
and each streaming algorithm's quality on real data. Every job runs under a timeout."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from paracel import JobFailed, launch
from paracel.launch import build_command, job_env, prepare, stop_session
from paracel.params import Mismatch
from paracel.streaming import GatherLogic, ParamAccess, StreamOptions
from tests.mpirun import ROOT, SHARED_DATA
from tests.streaming_local import run_locally

ML100K = SHARED_DATA / "movielens-100k"
TIMEOUT = 120


def job(output: Path, stream: dict[str, Any], algorithm: str = "tests.streaming_jobs:Tally",
        **params: Any) -> dict[str, Any]:
    return {"algorithm": algorithm, "staleness": None, "output": str(output),
            "params": {"stream": stream, **params}}


def tally_lines(n: int, keys: int, seed: int) -> list[tuple[int, float]]:
    rng = np.random.default_rng(seed)
    return list(zip(rng.integers(0, keys, n).tolist(), rng.integers(1, 10, n).astype(float).tolist()))


def write_lines(path: Path, records: list[tuple[int, float]], mode: str = "w") -> None:
    with open(path, mode, encoding="utf-8") as out:
        out.writelines(f"{key} {value:g}\n" for key, value in records)


def sums(records: list[tuple[int, float]]) -> dict[str, float]:
    totals: Counter[str] = Counter()
    for key, value in records:
        totals[str(key)] += value
    return dict(totals)


def outputs(out: Path) -> list[list[float]]:
    """Every worker's ``[position, value seen]`` outputs, in position order."""
    rows = [json.loads(line) for path in out.glob("outputs_*.jsonl") for line in path.read_text().splitlines()]
    return sorted(rows)


def stats(out: Path) -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted(out.glob("stream_*.json"))]


def summary(out: Path) -> dict[str, float]:
    return {k: float(v) for k, v in (line.split("\t") for line in (out / "summary.tsv").read_text().splitlines())}


def test_stream_settings_are_checked_by_field() -> None:
    assert StreamOptions.of({"input": "-", "updates_every": 2}).updates_every == 2.0
    for settings, field in [({"input": "-", "max_pending_pulls": 0}, ".max_pending_pulls"),
                            ({"input": "-", "bogus": 1}, ".bogus"), ({"batch": 4}, ".input"),
                            ({"input": str(ROOT / "no-such-file")}, ".input")]:
        with pytest.raises(Mismatch) as info:
            StreamOptions.of(settings)
        assert info.value.path == field


def last_updates(out: Path) -> tuple[dict[str, float], int]:
    """The last value of each key in the model-update streams, and how many times they were emitted."""
    last, times = {}, set()
    for path in out.glob("updates_*.tsv"):
        for line in path.read_text().splitlines():
            seconds, key, value = line.split("\t")
            last[key] = float(value)
            times.add((path, seconds))
    return last, len(times)


class Gathered(GatherLogic):
    """Keeps every record with the values of its keys."""

    def __init__(self) -> None:
        super().__init__()
        self.done: list[tuple[tuple[str, ...], list[Any]]] = []

    def keys_of(self, record: tuple[str, ...]) -> tuple[str, ...]:
        return record

    def on_values(self, record: tuple[str, ...], values: list[Any], ps: ParamAccess) -> None:
        self.done.append((record, values))


def test_gather_logic_hands_over_a_record_once_all_its_keys_arrived_in_the_order_asked() -> None:
    logic, asked = Gathered(), []

    class Pulls:
        def pull(self, key: str) -> None:
            asked.append(key)

    ps = Pulls()
    for record in [("a", "b"), ("b",), ()]:
        logic.on_recv(record, ps)
    assert asked == ["a", "b", "b"] and logic.done == [((), [])]  # a record without keys is done at once
    logic.on_pull_recv("b", 1, ps)  # the first answer for "b" is the first record's
    assert logic.done == [((), [])]
    logic.on_pull_recv("b", 2, ps)
    logic.on_pull_recv("a", 0, ps)
    assert logic.done == [((), []), (("b",), [2]), (("a", "b"), [0, 1])]


def test_a_finite_stream_ends_once_every_pull_in_flight_is_answered(tmp_path: Path) -> None:
    records = tally_lines(20_000, 5000, seed=1)
    write_lines(tmp_path / "in.txt", records)
    stream = {"input": str(tmp_path / "in.txt"), "max_pending_pulls": 64, "batch": 16, "updates_every": 0.02}
    out = launch(job(tmp_path / "out", stream), workers=2, servers=2, timeout=TIMEOUT).output_dir
    assert json.loads((out / "totals.json").read_text()) == sums(records)  # every push applied, once
    updates, emissions = last_updates(out)
    assert updates == sums(records) and emissions > 2  # the model-update stream ends at the final model
    assert [row[0] for row in outputs(out)] == list(range(len(records)))  # every pull answered, once
    per_worker = stats(out)
    assert sum(s["records"] for s in per_worker) == len(records)
    for s in per_worker:
        assert 1 < s["max_pulls_in_flight"] <= 64  # pulls were in flight together, never more than the limit
        assert s["lines"] == len(records) and s["pulls"] == s["pushes"] == s["records"]


def test_the_pull_limiter_at_one_with_a_slow_server_neither_deadlocks_nor_reorders(tmp_path: Path) -> None:
    records = tally_lines(300, 7, seed=2)
    write_lines(tmp_path / "in.txt", records)
    config = job(tmp_path / "out", {"input": str(tmp_path / "in.txt"), "max_pending_pulls": 1, "batch": 1},
                 update="tests.streaming_jobs:slow_add")
    start = time.monotonic()
    out = launch(config, workers=2, servers=1, timeout=TIMEOUT).output_dir
    assert time.monotonic() - start > 0.6  # 300 slow updates of 2 ms on one server did run
    assert json.loads((out / "totals.json").read_text()) == sums(records)
    # one pull at a time: each record sees exactly the sum of its key's earlier records
    seen: Counter[int] = Counter()
    for (position, value), (key, delta) in zip(outputs(out), records):
        assert value == seen[key], f"record {position} of key {key}"
        seen[key] += delta
    for s in stats(out):
        assert s["max_pulls_in_flight"] == 1 and s["input_stalls"] >= s["records"] > 0


def test_one_worker_with_one_pull_at_a_time_equals_the_one_process_reference(tmp_path: Path) -> None:
    from paracel.algorithms.online_mf import MFLogic, OnlineMF

    lines = (ML100K / "u.data").read_text().splitlines()[:1500]
    (tmp_path / "part.data").write_text("\n".join(lines) + "\n")
    replayed = sorted(lines, key=lambda line: float(line.split()[3]))  # the stream's order (stable)
    stream = {"input": str(tmp_path / "part.data"), "order_by": 3, "max_pending_pulls": 1}
    out = launch(job(tmp_path / "out", stream, "paracel.algorithms.online_mf:OnlineMF"),
                 workers=1, servers=2, timeout=TIMEOUT).output_dir
    reference = OnlineMF(stream)
    logic = MFLogic(reference, {}, None)
    run_locally(reference, logic, replayed)
    got = np.loadtxt(out / "predictions.tsv")
    np.testing.assert_array_equal(got[:, :2], np.array(logic.seen)[:, :2])
    np.testing.assert_allclose(got[:, 2], np.array(logic.seen)[:, 2], atol=1e-6)


class FollowedJob:
    """A 2-worker ``Tally`` job following a file, started without waiting for it."""

    def __init__(self, tmp_path: Path, **stream: Any) -> None:
        self.input, self.out = tmp_path / "in.txt", tmp_path / "out"
        self.input.write_text("")
        config = job(self.out, {"input": str(self.input), "follow": True, **stream},
                     update="tests.streaming_jobs:slow_add")
        _, resolved = prepare(config)
        env = {**job_env(), "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        self.proc = subprocess.Popen(build_command(resolved, 2, 1), cwd=ROOT, env=env, start_new_session=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def wait_for(self, done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + TIMEOUT / 2
        while not done():
            assert self.proc.poll() is None, self.proc.communicate()[0]
            assert time.monotonic() < deadline, "the followed stream made no progress"
            time.sleep(0.05)

    def finish(self) -> str:
        """The job's output once it has ended by itself, with exit status 0."""
        output, _ = self.proc.communicate(timeout=TIMEOUT / 2)
        assert self.proc.returncode == 0, output
        return output

    def stop(self) -> None:
        stop_session(self.proc)


def test_a_followed_file_is_read_as_it_grows_until_its_sentinel(tmp_path: Path) -> None:
    followed = FollowedJob(tmp_path, sentinel="STOP")
    try:
        first, second = tally_lines(100, 5, seed=3), tally_lines(100, 5, seed=4)
        write_lines(followed.input, first, "a")
        followed.wait_for(lambda: len(outputs(followed.out)) == 100)
        write_lines(followed.input, second[:-1], "a")
        with open(followed.input, "a", encoding="utf-8") as out:  # the writer stops mid-line ...
            out.write(f"{second[-1][0]} ")
        followed.wait_for(lambda: len(outputs(followed.out)) == 199)
        time.sleep(0.2)
        with open(followed.input, "a", encoding="utf-8") as out:  # ... and ends it later
            out.write(f"{second[-1][1]:g}\nSTOP\n3 1000\n")
        followed.finish()
    finally:
        followed.stop()
    assert [row[0] for row in outputs(followed.out)] == list(range(200))
    assert json.loads((followed.out / "totals.json").read_text()) == sums(first + second)  # not the line after STOP


def test_sigterm_ends_a_followed_stream_after_draining_its_work_in_flight(tmp_path: Path) -> None:
    followed = FollowedJob(tmp_path, max_pending_pulls=4, batch=2)
    try:
        records = tally_lines(2000, 40, seed=5)
        write_lines(followed.input, records, "a")
        followed.wait_for(lambda: len(outputs(followed.out)) >= 50)
        followed.proc.send_signal(signal.SIGTERM)  # mpiexec forwards it to every rank
        followed.finish()
    finally:
        followed.stop()
    taken = sum(s["records"] for s in stats(followed.out))
    answered = outputs(followed.out)
    assert 50 <= taken == len(answered) < len(records)  # it stopped early, with every pull answered ...
    applied: Counter[str] = Counter()
    for position, _ in answered:
        key, value = records[position]
        applied[str(key)] += value
    assert json.loads((followed.out / "totals.json").read_text()) == dict(applied)  # ... and every push applied


def test_standard_input_is_a_stream_for_one_worker(tmp_path: Path) -> None:
    records = tally_lines(500, 9, seed=6)
    _, resolved = prepare(job(tmp_path / "out", {"input": "-", "sentinel": "STOP"}))
    env = {**job_env(), "PYTHONPATH": str(ROOT)}
    text = "".join(f"{key} {value:g}\n" for key, value in records) + "STOP\n"
    done = subprocess.run(build_command(resolved, 1, 1), input=text, cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads((tmp_path / "out" / "totals.json").read_text()) == sums(records)


def test_a_bad_line_fails_the_job_naming_the_input_and_the_line(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("1 2\n3 x\n")
    with pytest.raises(JobFailed) as info:
        launch(job(tmp_path / "out", {"input": str(tmp_path / "in.txt")}), workers=2, servers=1, timeout=TIMEOUT)
    assert f"{tmp_path / 'in.txt'}: line 2 of the stream: " in info.value.output


# -- the algorithms' bars on real data
def test_online_mf_beats_the_global_mean_prequentially_on_movielens(tmp_path: Path) -> None:
    config = json.loads((ROOT / "configs" / "online_mf.json").read_text())
    stream = {**config["params"]["stream"], "input": str(ML100K / "u.data"), "updates_every": 0.5}
    out = launch(config, workers=2, servers=1, output=tmp_path / "out",
                 overrides=[f"params.stream={json.dumps(stream)}"], timeout=TIMEOUT).output_dir
    figures = summary(out)
    assert figures["ratings"] == 100_000
    assert figures["tail_rmse"] <= figures["tail_mean_rmse"] - 0.05, figures
    # the model-update stream: item rows (rank factors and a bias), ending at the servers' final rows
    rows = {}
    for path in out.glob("updates_*.tsv"):
        for line in path.read_text().splitlines():
            _, item, values = line.split("\t")
            rows[int(item)] = np.array(values.split(","), dtype=float)
    assert len(rows) == 1682 and {len(row) for row in rows.values()} == {config["params"]["rank"] + 1}


def test_online_mf_seeded_by_a_batch_mf_model_starts_where_batch_training_ended(tmp_path: Path) -> None:
    batch = {"algorithm": "paracel.algorithms.mf:MF", "staleness": 2, "output": str(tmp_path / "mf"),
             "params": {"train": str(ML100K / "u1.base"), "rank": 10, "rounds": 20, "implicit": False}}
    seed = launch(batch, workers=2, servers=1, timeout=TIMEOUT).output_dir
    stream = {"input": str(ML100K / "u1.test"), "order_by": 3}
    rmse = {}
    for name, seed_model in [("cold", None), ("seeded", str(seed))]:
        config = job(tmp_path / name, stream, "paracel.algorithms.online_mf:OnlineMF", rank=10, learning_rate=0.01,
                     seed_model=seed_model)
        rmse[name] = summary(launch(config, workers=2, servers=1, timeout=TIMEOUT).output_dir)["prequential_rmse"]
    assert rmse["seeded"] < 0.97 and rmse["seeded"] < rmse["cold"] - 0.08, rmse


def test_passive_aggressive_reaches_84_percent_on_a9a_after_one_pass(tmp_path: Path) -> None:
    out = launch(ROOT / "configs" / "pa.json", workers=2, servers=1, output=tmp_path / "out",
                 timeout=TIMEOUT).output_dir
    figures = summary(out)
    assert figures["test_accuracy"] >= 0.84, figures
    assert sum(s["records"] for s in stats(out)) == 32_561


def test_count_min_is_exact_to_the_sketch_and_within_its_guarantee_on_movielens(tmp_path: Path) -> None:
    from paracel.algorithms.count_min import CountMin

    data = ML100K / "u.data"
    config = json.loads((ROOT / "configs" / "count_min.json").read_text())
    stream = {**config["params"]["stream"], "input": str(data)}
    out = launch(config, workers=2, servers=2, output=tmp_path / "out",
                 overrides=[f"params.stream={json.dumps(stream)}"], timeout=TIMEOUT).output_dir
    lines = (out / "estimates.tsv").read_text().splitlines()
    estimates = {int(x): int(c) for x, c in (line.split("\t") for line in lines)}
    items = [int(line.split()[1]) for line in data.read_text().splitlines()]
    exact = Counter(items)
    assert estimates.keys() == exact.keys()
    sketch = CountMin(**{**config["params"], "stream": {"input": str(data)}})
    counters = np.zeros(sketch.depth * sketch.width)
    for x in items:
        counters[sketch.counters(x)] += 1
    assert all(estimates[x] == counters[sketch.counters(x)].min() for x in exact)  # = the one-process sketch
    bound = sketch.epsilon * len(items)
    assert all(estimates[x] >= n for x, n in exact.items())
    over = sum(estimates[x] > n + bound for x, n in exact.items())
    assert over <= math.ceil(sketch.delta * len(exact)), (over, len(exact))


def test_the_factorization_machine_predicts_its_pairwise_model() -> None:
    from paracel.algorithms.fm import FM

    params = json.loads((ROOT / "configs" / "fm.json").read_text())["params"]
    paths = {name: str(ML100K / Path(params[name]).name) for name in ("users", "items")}
    fm = FM(**{**params, **paths, "stream": {"input": str(ML100K / "u1.base")}, "test": None})
    rng = np.random.default_rng(0)
    model = rng.normal(0, 0.3, (fm.features.nside + fm.features.nkeys - 1, fm.rank + 1))
    users, items = np.array([1, 13, 943, 500]), np.array([1, 1682, 50, 7])
    X = fm.features.matrix(users, items)
    for row, got in enumerate(fm.predict(model, 3.5, users, items)):
        cols, x = X[row].indices, X[row].data
        assert len(cols) == 5 + len(fm.features.items[int(items[row])][1])  # ids, age, gender, job, genres
        pairs = sum(model[cols[a], 1:] @ model[cols[b], 1:] * x[a] * x[b]
                    for a in range(len(cols)) for b in range(a + 1, len(cols)))
        assert got == pytest.approx(3.5 + model[cols, 0] @ x + pairs, rel=1e-12)


def test_the_factorization_machine_reaches_0_95_on_movielens_u1(tmp_path: Path) -> None:
    config = json.loads((ROOT / "configs" / "fm.json").read_text())
    stream = {**config["params"]["stream"], "input": str(ML100K / "u1.base")}
    overrides = [f"params.stream={json.dumps(stream)}", f"params.test={ML100K / 'u1.test'}",
                 f"params.users={ML100K / 'u.user'}", f"params.items={ML100K / 'u.item'}"]
    out = launch(config, workers=2, servers=1, output=tmp_path / "out", overrides=overrides, timeout=TIMEOUT).output_dir
    figures = summary(out)
    assert figures["test_rmse"] <= 0.95, figures
    assert sum(s["records"] for s in stats(out)) == 2 * 80_000  # two passes over u1.base
