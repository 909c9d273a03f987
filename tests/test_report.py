"""The run record and the report, from real runs: ``run.json`` and ``metrics.jsonl`` hold the
documented fields with sane values, the progress lines of a run with a straggler (one stuck
for seconds), ``prun report`` on one run and on two compared, every plot a valid PNG, and a
headless-browser screenshot of the page showing the plots."""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from paracel import launch
from paracel.launch import main as prun
from paracel.progress import EVENTS
from paracel.report import write_report

ROUNDS, NKEYS, PAUSE = 6, 300, 3.6
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RUN_FIELDS = {"config", "command", "launcher", "cwd", "ranks", "versions", "start", "end", "seconds", "exit_status",
              "status"}
USAGE_FIELDS = {"wall", "compute", "wait", "comm", "clock", "hits", "misses", "load", "staleness", "host", "pid"}


def straggler(out: Path, staleness: int | None, pause: float, progress: str):
    return launch({"algorithm": "tests.watch_jobs:Straggler", "staleness": staleness, "output": str(out),
                   "params": {"rounds": ROUNDS, "nkeys": NKEYS, "pause": pause}},
                  workers=2, servers=1, timeout=90, progress=progress)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A BSP run whose worker 1 stalls for PAUSE seconds in round 1, and one at staleness 2."""
    root = tmp_path_factory.mktemp("watch")
    return {"slow": straggler(root / "slow", 0, PAUSE, "lines"), "loose": straggler(root / "loose", 2, 0.0, "quiet")}


def events(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_run_json(runs):
    run = runs["slow"]
    record = json.loads((run.output_dir / "run.json").read_text())
    assert set(record) == RUN_FIELDS
    assert record["config"]["algorithm"] == "tests.watch_jobs:Straggler" and record["config"]["staleness"] == 0
    assert "-m" in record["command"] and record["command"][-2:] == ["--servers", "1"]
    ranks = record["ranks"]
    assert (ranks["workers"], ranks["servers"], ranks["clock"], ranks["mode"]) == ([0, 1], [2], 3, "local")
    assert set(ranks["hosts"]) == {"0", "1", "3"} and all(ranks["hosts"].values())
    assert record["versions"]["paracel"] and record["versions"]["numpy"] == np.__version__
    start, end = datetime.fromisoformat(record["start"]), datetime.fromisoformat(record["end"])
    assert 0 < (end - start).total_seconds() == pytest.approx(record["seconds"], abs=0.05)
    assert record["seconds"] > PAUSE and record["exit_status"] == 0 and record["status"] == "ok"


def test_metrics_jsonl(runs):
    log = events(runs["slow"].output_dir)
    assert log[0]["event"] == "start" and log[0]["workers"] == 2 and log[0]["staleness"] == 0
    assert all(e["event"] in EVENTS for e in log)
    assert [e["t"] for e in log] == sorted(e["t"] for e in log)
    for w in range(2):
        ticks = [e for e in log if e["event"] == "tick" and e["worker"] == w]
        assert [e["clock"] for e in ticks] == list(range(1, ROUNDS + 1))
        assert all(set(e["usage"]) == USAGE_FIELDS for e in ticks)
        walls = [e["usage"]["wall"] for e in ticks]
        assert walls == sorted(walls)
    losses = [e for e in log if e["event"] == "metrics" and "loss" in e["values"]]
    assert [e["step"] for e in losses] == list(range(ROUNDS))
    assert [e["values"]["loss"] for e in losses] == pytest.approx([1 / (r + 1) for r in range(ROUNDS)])
    combined = [e["values"]["mean_clock"] for e in log if e["event"] == "metrics" and "mean_clock" in e["values"]]
    assert combined == pytest.approx([r + 1.0 for r in range(ROUNDS)])  # summed over both workers, in order
    waits = [e for e in log if e["event"] == "waiting"]
    assert len(waits) == 1 and (waits[0]["worker"], waits[0]["clock"], waits[0]["waits_for"]) == (0, 2, [[1, 1]])


def final_usage(folder: Path) -> dict[int, dict]:
    return {e["worker"]: e["usage"] for e in events(folder) if e["event"] == "done"}


@pytest.mark.parametrize("name", ["slow", "loose"])
def test_time_split_and_load(runs, name):
    folder = runs[name].output_dir
    usage = final_usage(folder)
    assert sorted(usage) == [0, 1]
    for w, u in usage.items():
        solve = json.loads((folder / f"solve_{w}.json").read_text())["seconds"]
        parts = u["compute"] + u["wait"] + u["comm"]
        assert parts == pytest.approx(u["wall"], rel=0.05) and parts == pytest.approx(solve, rel=0.05)
        assert min(u["compute"], u["wait"], u["comm"]) > 0
        (requests, keys, sent, received), = u["load"]  # one server
        assert keys == NKEYS * (2 * ROUNDS + (w == 0))  # a read and an update a round, worker 0's first write
        assert requests >= 2 * ROUNDS and sent >= ROUNDS * NKEYS * 40 and received >= ROUNDS * NKEYS * 32
        lags = {int(lag): n for lag, n in u["staleness"].items()}
        assert sum(lags.values()) == ROUNDS and set(lags) <= set(range(3 if name == "loose" else 1))
        assert isinstance(u["hits"], int) and isinstance(u["misses"], int)
    if name == "slow":  # worker 0 waited out worker 1's pause at the bound
        assert usage[0]["wait"] > PAUSE - 0.5 and usage[1]["compute"] > PAUSE


def test_progress_lines_of_a_real_run(runs):
    text = runs["slow"].stdout
    shown = [line for line in text.splitlines() if line.startswith("[paracel]")]
    patterns = {"loss": r"\[paracel\] step (\d): loss=[0-9.]+ rows=\d+ \[clock \d/6.*\]",
                "combined": r"\[paracel\] step (\d): mean_clock=[0-9.]+ slowest=[0-9.]+ \[clock \d/6.*\]",
                "clock": r"\[paracel\] clock \d/6.*",
                "waiting": r"\[paracel\] waiting: worker 0 \(clock 2\) has waited [0-9.]+ s for worker 1 \(clock 1\)",
                "done": r"\[paracel\] done: clock 6/6, .* workers \d+% computing, \d+% waiting, \d+% communicating"}
    kinds: dict[str, list[int]] = {kind: [] for kind in patterns}
    for line in shown:
        matched = [(kind, re.fullmatch(p, line)) for kind, p in patterns.items() if re.fullmatch(p, line)]
        assert len(matched) == 1, line
        kind, match = matched[0]
        kinds[kind].append(int(match.group(1)) if match.groups() else 0)
    assert kinds["loss"] == list(range(ROUNDS)) and kinds["combined"] == list(range(ROUNDS))
    assert len(kinds["waiting"]) == 1 and len(kinds["done"]) == 1 and shown[-1].startswith("[paracel] done")
    assert "[paracel]" not in runs["loose"].stdout  # quiet


def embedded_pngs(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def assert_valid_pngs(images: list[bytes], tmp_path: Path) -> None:
    for i, data in enumerate(images):
        assert data.startswith(PNG_SIGNATURE)
        path = tmp_path / f"plot{i}.png"
        path.write_bytes(data)
        pixels = imread(path)
        assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 200
        assert pixels[..., :3].std() > 0.05  # not a blank image


def test_report_of_one_run(runs, tmp_path):
    path = write_report([runs["slow"].output_dir])
    assert path == runs["slow"].output_dir / "report.html"
    page = path.read_text()
    images = embedded_pngs(page)
    assert len(images) == 6  # metrics by round and by time, clocks, staleness, time split, servers
    assert_valid_pngs(images, tmp_path)
    assert "tests.watch_jobs:Straggler" in page and "slow (staleness 0)" in page


def test_report_comparing_runs(runs, tmp_path):
    out = tmp_path / "compare.html"
    assert prun(["report", str(runs["slow"].output_dir), str(runs["loose"].output_dir), "-o", str(out)]) == 0
    page = out.read_text()
    assert "2 runs compared" in page and "slow (staleness 0)" in page and "loose (staleness 2)" in page
    images = embedded_pngs(page)
    assert len(images) == 2 + 2 * 6  # the overlays, then each run's plots
    assert_valid_pngs(images, tmp_path)


def test_report_errors_name_the_folder_and_line(runs, tmp_path, capsys):
    assert prun(["report", str(tmp_path / "nowhere")]) == 2
    assert f"{tmp_path / 'nowhere'}: no metrics.jsonl" in capsys.readouterr().err
    broken = tmp_path / "broken"
    shutil.copytree(runs["loose"].output_dir, broken)
    with open(broken / "metrics.jsonl", "a") as log:
        log.write("{not json\n")
    lines = len((broken / "metrics.jsonl").read_text().splitlines())
    assert prun(["report", str(broken)]) == 2
    assert f"{broken / 'metrics.jsonl'}:{lines}: not a metrics event" in capsys.readouterr().err


def chromium() -> str:
    """Debian's chromium, installed with apt-get when absent (as root); skips where it cannot be."""
    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium is not installed and cannot be installed here (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
            subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=600)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"chromium could not be installed: {exc}")
    return shutil.which("chromium") or pytest.skip("apt-get installed chromium, but it is not on PATH")


def share_of(pixels: np.ndarray, rgb: tuple[int, int, int], tolerance: float = 0.03) -> float:
    return float((np.abs(pixels[..., :3] - np.array(rgb) / 255).max(axis=-1) < tolerance).mean())


@pytest.mark.timeout(1300)
def test_screenshot_shows_the_plots(runs, tmp_path):
    browser = chromium()
    page = write_report([runs["slow"].output_dir], tmp_path / "report.html")
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,3000",
                    page.as_uri()], check=True, capture_output=True, timeout=120)
    pixels = imread(shot)
    assert pixels.shape[:2] == (3000, 1200)
    assert share_of(pixels, (255, 255, 255)) < 0.93  # not a blank page
    # matplotlib's first colours (workers 0 and 1, computing/waiting) and the staleness bars
    assert share_of(pixels, (31, 119, 180)) > 0.002 and share_of(pixels, (255, 127, 14)) > 0.001
    assert share_of(pixels, (148, 103, 189)) > 0.001
