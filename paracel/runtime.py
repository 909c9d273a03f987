"""The SPMD entry point of every rank: decide the role by rank, run it, never hang on failure.

Started by the launcher as ``python -m paracel CONFIG.json --servers S``.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import traceback
from pathlib import Path

from mpi4py import MPI

from paracel import checkpoint
from paracel.client import ParamClient
from paracel.clock import run_clock
from paracel.config import JobConfig, read_resolved, resolve_algorithm
from paracel.errors import ParacelError
from paracel.launch import FAILURE_PREFIX, die_with_parent
from paracel.layout import Layout
from paracel.paralg import WorkerContext
from paracel.server import serve


def run_worker(world: MPI.Intracomm, workers: MPI.Intracomm, layout: Layout, config: JobConfig) -> None:
    """Build the user's algorithm, run its ``solve()``, then sign off with servers and clock."""
    algorithm = resolve_algorithm(config.algorithm)(**config.params)
    client = ParamClient(world, layout, config.staleness, config.cache, config.request_timeout)
    algorithm.attach(WorkerContext(client=client, worker_comm=workers, output_dir=Path(config.output),
                                   checkpoint_every=config.checkpoint_every))
    if config.resume:
        checkpoint.restore(algorithm, client, resumed(config))
    algorithm.solve()
    client.finish()


def resumed(config: JobConfig) -> checkpoint.Checkpoint:
    """The checkpoint a resumed job starts from (``config.resume``, checked by the launcher)."""
    saved = checkpoint.read_manifest(Path(config.resume))
    if saved is None:
        raise ParacelError(f"{config.resume}: not a complete checkpoint")
    return saved


def run_rank(config: JobConfig, nservers: int) -> None:
    """Run this rank's role; any exception is reported with the rank and aborts the whole job."""
    world = MPI.COMM_WORLD
    rank = world.Get_rank()
    role = "rank"
    try:
        layout = Layout.from_world(world.Get_size(), nservers)
        role = layout.role(rank)
        workers = world.Split(0 if role == "worker" else MPI.UNDEFINED, rank)
        if role != "worker":
            outlast_stop_signals()
        if role == "worker":
            run_worker(world, workers, layout, config)
        elif role == "server":
            serve(world, layout.nworkers)
        else:
            start = resumed(config).clock if config.resume else 0
            clock = run_clock(world, layout.nworkers, config.staleness, Path(config.output), start)
            (Path(config.output) / "clock.json").write_text(json.dumps(clock.report()) + "\n")
    except BaseException:  # noqa: B036 - any failure, even KeyboardInterrupt, must end the job
        report = f"paracel: {role} rank {rank} failed:\n{traceback.format_exc()}"
        save_failure(Path(config.output), rank, report)
        sys.stdout.flush()
        sys.stderr.write(report)
        sys.stderr.flush()
        world.Abort(1)


def outlast_stop_signals() -> None:
    """Servers and the clock rank ignore SIGTERM and SIGINT, which ``mpiexec`` forwards to every
    rank: the workers decide how a job ends on them (a batch worker dies and the job is torn
    down; a streaming worker ends its stream and still needs the servers to drain it). They die
    with their launcher by SIGKILL instead, as a SIGTERM would now be ignored."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    die_with_parent(signal.SIGKILL)


def save_failure(output_dir: Path, rank: int, report: str) -> None:
    """Keep a failing rank's report in the output folder, on disk before ``MPI_Abort``.

    The abort tears down every rank and ``mpiexec`` may exit before it has forwarded the
    failing rank's stderr; the launcher reads these files (``paracel.launch.failure_reports``)
    so that a failed job always says why.
    """
    path = output_dir / f"{FAILURE_PREFIX}{rank}.txt"
    try:
        with open(path, "w", encoding="utf-8") as out:
            out.write(report)
            out.flush()
            os.fsync(out.fileno())
    except OSError:  # the report still goes to stderr; a full disk must not hide the failure
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m paracel", description="run one rank of a paracel job")
    parser.add_argument("config", help="resolved job config (JSON)")
    parser.add_argument("--servers", type=int, required=True, help="number of parameter-server ranks")
    args = parser.parse_args(argv)
    die_with_parent()  # a rank whose launcher (hydra's proxy) is killed must not live on
    run_rank(read_resolved(args.config), args.servers)
