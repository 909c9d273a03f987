"""The run record: ``run.json`` in a job's output folder — what ran, where, with which versions,
when, and how it ended — written by the launcher when the job starts and again when it ends.

The ranks record the rest themselves: the clock rank streams ``metrics.jsonl``
(``paracel.progress``) and leaves ``clock.json``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from paracel.config import JobConfig

RUN_FILE = "run.json"
#: The distributions whose versions a run records.
PACKAGES = ("paracel", "numpy", "scipy", "mpi4py", "mpich", "msgpack")


def versions() -> dict[str, str | None]:
    """Python's version and those of ``PACKAGES`` (None where not installed)."""
    found: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _hosts(output_dir: Path, clock_rank: int) -> dict[str, str]:
    """Host of each rank that reported one: the workers and the clock rank (``clock.json``)."""
    try:
        clock = json.loads((output_dir / "clock.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(clock_rank) if rank == "clock" else rank: host for rank, host in clock.get("hosts", {}).items()}


class RunRecord:
    """``run.json`` of one job; ``fields`` is what the file holds (see ``recorded``)."""

    def __init__(self, job: JobConfig, command: list[str], workers: int, servers: int, mode: str) -> None:
        self.path = Path(job.output) / RUN_FILE
        self.output_dir = Path(job.output)
        self.fields: dict[str, Any] = {
            "config": json.loads(job.to_json()), "command": command, "launcher": sys.argv, "cwd": os.getcwd(),
            "ranks": {"workers": list(range(workers)), "servers": list(range(workers, workers + servers)),
                      "clock": workers + servers, "mode": mode, "hosts": {}},
            "versions": versions(), "start": _now(), "end": None, "seconds": None,
            "exit_status": None, "status": "running"}
        self._started = time.perf_counter()
        self.write()

    def write(self) -> None:
        """Write ``run.json`` as it stands."""
        self.path.write_text(json.dumps(self.fields, indent=2) + "\n", encoding="utf-8")

    def end(self, exit_status: int) -> None:
        """The job exited with ``exit_status``."""
        self.stop(exit_status, "ok" if exit_status == 0 else "failed")

    def stop(self, exit_status: int | None, status: str) -> None:
        """The job ended with ``exit_status`` (None: it was stopped); ``status`` says how."""
        self.fields.update(end=_now(), seconds=round(time.perf_counter() - self._started, 3),
                           exit_status=exit_status, status=status)
        self.fields["ranks"]["hosts"] = _hosts(self.output_dir, self.fields["ranks"]["clock"])
        self.write()


@contextmanager
def recorded(job: JobConfig, command: list[str], workers: int, servers: int, mode: str) -> Iterator[RunRecord]:
    """Record the run of ``command`` in ``run.json``: written at the start (``status``
    "running") and at the end — ``exit_status`` and ``status`` "ok" / "failed" when the caller
    calls ``end``, else "timeout", "interrupted" (SIGINT, SIGTERM, SIGHUP) or "error" from the
    exception that leaves the block.

    ``run.json``: ``config`` (resolved), ``command`` (the MPI command), ``launcher`` (its argv),
    ``cwd``, ``ranks`` (``workers``, ``servers`` and ``clock`` rank numbers, ``mode``, ``hosts``
    by rank), ``versions``, ``start`` and ``end`` (UTC, ISO 8601), ``seconds``,
    ``exit_status``, ``status``.
    """
    record = RunRecord(job, command, workers, servers, mode)
    try:
        yield record
    except subprocess.TimeoutExpired:
        record.stop(None, "timeout")
        raise
    except KeyboardInterrupt:  # the launcher's SIGTERM and SIGHUP arrive as one too
        record.stop(None, "interrupted")
        raise
    except BaseException:
        record.stop(None, "error")
        raise
