"""``prun report``: one self-contained HTML page of PNG plots of finished runs.

A run is an output folder with ``metrics.jsonl`` (``paracel.progress``) and ``run.json``
(``paracel.record``). For each run the page shows its metrics against the round and the wall
time, every worker's clock over time (a straggler stands out), the staleness its reads saw,
how each worker split its time between computing, waiting and communicating, and the load on
each server. Given several runs it first overlays their metrics against time (e.g. staleness
0 vs 2 vs unbounded). The plots are PNGs (matplotlib, Agg) embedded in the page, so the one
file opens anywhere.
"""
from __future__ import annotations

import argparse
import base64
import html
import io
import json
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from paracel.errors import ParacelError
from paracel.record import RUN_FILE
from paracel.usage import LOAD_COLUMNS, TIME_SPLIT

if TYPE_CHECKING:
    from matplotlib.figure import Figure

REPORT_FILE = "report.html"
METRICS_FILE = "metrics.jsonl"


class ReportError(ParacelError):
    """A folder cannot be reported on; the message names the folder or the file and line."""


@dataclass
class Run:
    """What one finished run recorded: ``record`` (``run.json``, empty if absent) and the events of
    its ``metrics.jsonl``, sorted by kind."""

    folder: Path
    record: dict[str, Any]
    metrics: list[dict[str, Any]] = field(default_factory=list)  # metrics rows: t, worker, step, values
    clocks: dict[int, list[tuple[float, int]]] = field(default_factory=lambda: defaultdict(list))
    usage: dict[int, dict[str, Any]] = field(default_factory=dict)  # each worker's latest counters
    waits: list[dict[str, Any]] = field(default_factory=list)
    staleness: int | None = None
    nworkers: int = 0

    @classmethod
    def load(cls, folder: str | Path) -> Run:
        """Read ``folder``; raises ``ReportError`` if it has no ``metrics.jsonl`` or a line of it
        is not a JSON object."""
        folder = Path(folder)
        path = folder / METRICS_FILE
        if not path.is_file():
            raise ReportError(f"{folder}: no {METRICS_FILE} (not the output folder of a paracel run)")
        record_path = folder / RUN_FILE
        run = cls(folder, json.loads(record_path.read_text(encoding="utf-8")) if record_path.is_file() else {})
        with open(path, encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                try:
                    event = json.loads(line)
                    run._add(event)
                except (ValueError, KeyError, TypeError) as exc:
                    raise ReportError(f"{path}:{number}: not a metrics event ({exc})") from None
        return run

    def _add(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "start":
            self.staleness, self.nworkers = event["staleness"], event["workers"]
        elif kind == "metrics":
            self.metrics.append(event)
        elif kind == "waiting":
            self.waits.append(event)
        if kind == "tick":
            self.clocks[event["worker"]].append((event["t"], event["clock"]))
        if event.get("usage"):
            self.usage[event["worker"]] = event["usage"]

    @property
    def label(self) -> str:
        """The folder's name and the run's staleness."""
        bound = "none" if self.staleness is None else self.staleness
        return f"{self.folder.name} (staleness {bound})"

    def series(self, by: str) -> dict[str, dict[int, tuple[list[float], list[float]]]]:
        """Each numeric metric's values per logging worker against ``by`` ("step" or "t")."""
        out: dict[str, dict[int, tuple[list[float], list[float]]]] = defaultdict(dict)
        for row in self.metrics:
            for name, value in row["values"].items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    xs, ys = out[name].setdefault(row["worker"], ([], []))
                    xs.append(row[by])
                    ys.append(value)
        return out


# ---------------------------------------------------------------------------- plots
def _figure(panels: int, height: float = 3.0) -> tuple["Figure", list[Any]]:
    from matplotlib.figure import Figure
    columns = min(panels, 3)
    rows = -(-panels // columns)
    fig = Figure(figsize=(4.2 * columns, height * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel().tolist()
    for extra in axes[panels:]:
        extra.set_visible(False)
    return fig, axes[:panels]


def plot_metrics(runs: Sequence[Run], by: str) -> "Figure | None":
    """Every metric against the round (``by="step"``) or the wall time (``"t"``), one panel per
    metric, one line per run (and per worker that logged it)."""
    named = [(run, run.series(by)) for run in runs]
    names = list(dict.fromkeys(name for _, series in named for name in series))
    if not names:
        return None
    fig, axes = _figure(len(names))
    for ax, name in zip(axes, names):
        for run, series in named:
            for worker, (xs, ys) in sorted(series.get(name, {}).items()):
                label = run.label if len(runs) > 1 else f"logged by worker {worker}"
                ax.plot(xs, ys, marker="." if len(xs) < 50 else None, label=label)
        ax.set_title(name)
        ax.set_xlabel("round (step)" if by == "step" else "seconds since start")
        ax.grid(alpha=0.3)
    if len(runs) > 1 or any(len(series.get(names[0], {})) > 1 for _, series in named):
        axes[0].legend(fontsize="small")
    return fig


def plot_clocks(run: Run) -> "Figure | None":
    """Each worker's clock over time: a straggler's line lags the others."""
    if not run.clocks:
        return None
    fig, (ax,) = _figure(1, 3.5)
    for worker, points in sorted(run.clocks.items()):
        ts, clocks = zip(*points)
        ax.step(ts, clocks, where="post", label=f"worker {worker}")
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("clock")
    ax.set_title("clock of each worker")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def plot_staleness(run: Run) -> "Figure | None":
    """How many reads went to the servers at each lag (own clock minus the slowest known)."""
    lags: Counter[int] = Counter()
    for usage in run.usage.values():
        lags.update({int(lag): count for lag, count in usage.get("staleness", {}).items()})
    if not lags:
        return None
    fig, (ax,) = _figure(1, 3.2)
    keys = sorted(lags)
    ax.bar(keys, [lags[k] for k in keys], color="tab:purple")
    ax.set_xticks(keys)
    ax.set_xlabel("staleness seen by a read (clocks behind the reader)")
    ax.set_ylabel("reads")
    ax.set_title("observed staleness")
    return fig


def plot_split(run: Run) -> "Figure | None":
    """Seconds each worker spent computing, waiting on the clock rank and communicating."""
    if not run.usage:
        return None
    workers = sorted(run.usage)
    fig, (ax,) = _figure(1, 1.2 + 0.45 * len(workers))
    left = [0.0] * len(workers)
    for key, label in TIME_SPLIT:
        widths = [run.usage[w][key] for w in workers]
        ax.barh([f"worker {w}" for w in workers], widths, left=left, label=label)
        left = [a + b for a, b in zip(left, widths)]
    ax.set_xlabel("seconds")
    ax.set_title("where each worker's time went")
    fig.legend(loc="outside lower center", ncols=len(TIME_SPLIT), fontsize="small")
    ax.invert_yaxis()
    return fig


def plot_servers(run: Run) -> "Figure | None":
    """Requests, keys and bytes each server got from the workers (stacked by worker)."""
    rows = {w: u["load"] for w, u in sorted(run.usage.items()) if u.get("load")}
    if not rows:
        return None
    nservers = len(next(iter(rows.values())))
    panels = (("requests", [0]), ("keys", [1]), ("MB moved", [2, 3]))
    fig, axes = _figure(len(panels))
    servers = [f"server {s}" for s in range(nservers)]
    for ax, (title, columns) in zip(axes, panels):
        bottom = [0.0] * nservers
        for worker, load in rows.items():
            scale = 1e-6 if title.startswith("MB") else 1
            heights = [sum(load[s][c] for c in columns) * scale for s in range(nservers)]
            ax.bar(servers, heights, bottom=bottom, label=f"worker {worker}")
            bottom = [a + b for a, b in zip(bottom, heights)]
        ax.set_title(title)
    axes[0].legend(fontsize="small")
    return fig


# ---------------------------------------------------------------------------- the page
def _png(fig: "Figure") -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure_html(title: str, fig: "Figure | None") -> str:
    if fig is None:
        return f"<h3>{html.escape(title)}</h3><p class=none>nothing recorded</p>"
    return (f"<figure><h3>{html.escape(title)}</h3><img alt=\"{html.escape(title)}\" "
            f"src=\"data:image/png;base64,{_png(fig)}\"></figure>")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def _summary_rows(run: Run) -> list[list[Any]]:
    rec, config = run.record, run.record.get("config", {})
    last = run.metrics[-1]["values"] if run.metrics else {}
    ranks = rec.get("ranks", {})
    return [["folder", str(run.folder)], ["algorithm", config.get("algorithm")],
            ["workers / servers", f"{len(ranks.get('workers', [])) or run.nworkers} / {len(ranks.get('servers', [])) or '?'}"],
            ["staleness", "none" if run.staleness is None else run.staleness],
            ["status", f"{rec.get('status', 'no run.json')} (exit {rec.get('exit_status')})"],
            ["start", rec.get("start")], ["seconds", rec.get("seconds")],
            ["last metrics", " ".join(f"{k}={_cell(v)}" for k, v in last.items()) or None],
            ["versions", " ".join(f"{k} {v}" for k, v in rec.get("versions", {}).items())],
            ["waits over the reporting threshold", len(run.waits)]]


def _worker_rows(run: Run) -> list[list[Any]]:
    rows = []
    for worker, u in sorted(run.usage.items()):
        wall = u["wall"] or 1.0
        split = [f"{u[key]:.3f} ({u[key] / wall:.0%})" for key, _ in TIME_SPLIT]
        load = [sum(column) for column in zip(*u["load"])] if u.get("load") else [0] * len(LOAD_COLUMNS)
        rows.append([worker, u.get("host"), u.get("clock"), u["wall"], *split, u.get("hits"), u.get("misses"), *load])
    return rows


def _run_section(run: Run) -> str:
    split = [label for _, label in TIME_SPLIT]
    parts = [f"<h2>{html.escape(run.label)}</h2>", _table(["", ""], _summary_rows(run)),
             _table(["worker", "host", "clock", "wall s", *split, "cache hits", "misses", *LOAD_COLUMNS],
                    _worker_rows(run)),
             _figure_html("metrics by round", plot_metrics([run], "step")),
             _figure_html("metrics by wall time", plot_metrics([run], "t")),
             _figure_html("clock progress", plot_clocks(run)),
             _figure_html("observed staleness", plot_staleness(run)),
             _figure_html("compute / wait / communicate", plot_split(run)),
             _figure_html("load per server", plot_servers(run))]
    return "\n".join(parts)


STYLE = """body{font-family:sans-serif;margin:2em;max-width:1300px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}
figure{margin:1em 0}img{max-width:100%;border:1px solid #eee}.none{color:#888}"""


def render(runs: Sequence[Run]) -> str:
    """The HTML page of ``runs`` (the comparison first when there are several)."""
    title = "paracel run report" if len(runs) == 1 else f"paracel: {len(runs)} runs compared"
    parts = [f"<!DOCTYPE html><html><head><meta charset=utf-8><title>{title}</title><style>{STYLE}</style>"
             f"</head><body><h1>{title}</h1>"]
    if len(runs) > 1:
        parts.append(_figure_html("metrics by wall time, every run", plot_metrics(runs, "t")))
        parts.append(_figure_html("metrics by round, every run", plot_metrics(runs, "step")))
    parts += [_run_section(run) for run in runs]
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(folders: Sequence[str | Path], output: str | Path | None = None) -> Path:
    """Write the report of the runs in ``folders`` to ``output`` (default: ``report.html`` in
    the one folder, or in the current folder for several); returns its path. Raises
    ``ReportError`` naming a folder that holds no run."""
    if not folders:
        raise ReportError("no output folder to report on")
    runs = [Run.load(folder) for folder in folders]
    path = Path(output) if output else (Path(folders[0]) if len(folders) == 1 else Path.cwd()) / REPORT_FILE
    path.write_text(render(runs), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    """``prun report OUTPUT_DIR [DIR ...] [-o FILE]``."""
    parser = argparse.ArgumentParser(prog="prun report", description="Write an HTML report of finished paracel "
                                     "runs; several folders are compared.")
    parser.add_argument("folders", nargs="+", help="output folders of runs (with metrics.jsonl)")
    parser.add_argument("-o", "--output", help="report file (default: FOLDER/report.html, or ./report.html "
                        "for several folders)")
    args = parser.parse_args(argv)
    try:
        path = write_report(args.folders, args.output)
    except (ReportError, OSError) as exc:
        print(f"prun report: error: {exc}", file=sys.stderr)
        return 2
    print(f"prun report: wrote {path}")
    return 0
