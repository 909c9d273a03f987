"""Build and run the MPI command of a paracel job (``prun``), from the shell or from Python."""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from paracel.config import JobConfig, load_config
from paracel.errors import ConfigError, JobFailed

_KEEP: Any = object()  # "leave the config's value" for optional overrides
#: A failing rank leaves ``<output>/failed-rank-<rank>.txt`` (see ``paracel.runtime.save_failure``).
FAILURE_PREFIX = "failed-rank-"


def mpiexec_path() -> str:
    """The ``mpiexec`` beside this Python (the PyPI ``mpich`` wheel's), else the one on PATH."""
    local = Path(sys.executable).parent / "mpiexec"
    if local.exists():
        return str(local)
    found = shutil.which("mpiexec")
    if found is None:
        raise FileNotFoundError("mpiexec not found: install the 'mpich' package (pip install mpich)")
    return found


def run_command(cmd: list[str], timeout: float | None, env: dict[str, str] | None = None,
                cwd: str | Path | None = None, capture: bool = True) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own process group; on timeout kill the whole group and re-raise.

    Killing the group (not just mpiexec) guarantees that no rank outlives a timed-out job.
    """
    pipe = subprocess.PIPE if capture else None
    proc = subprocess.Popen(cmd, stdout=pipe, stderr=pipe, text=True, env=env, cwd=cwd,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


MODES = ("local", "mpi", "slurm")


@dataclass
class LaunchResult:
    """A finished job: exit code, output folder, and its captured output (if captured)."""

    returncode: int
    output_dir: Path
    stdout: str = ""
    stderr: str = ""


def prepare(config: str | Path | dict[str, Any], staleness: Any = _KEEP, overrides: Sequence[str] = (),
            output: str | Path | None = None) -> tuple[JobConfig, Path]:
    """Validate the config with its overrides, create the output folder and write the
    resolved config there as ``config.json``; returns (config, resolved config path)."""
    items = list(overrides)
    if staleness is not _KEEP:
        items.append(f"staleness={json.dumps(staleness)}")
    if output is not None:
        items.append(f"output={json.dumps(str(output))}")
    with _current_folder_importable():
        job = load_config(config, items)
    out = Path(job.output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(f"{FAILURE_PREFIX}*.txt"):  # an earlier run's: they would blame this one
        stale.unlink()
    job.output = str(out)
    resolved = out / "config.json"
    resolved.write_text(job.to_json() + "\n", encoding="utf-8")
    return job, resolved


@contextmanager
def _current_folder_importable() -> Iterator[None]:
    """Import the algorithm as the ranks will (``job_env``): user modules from the current folder.

    The ``prun`` command's own path holds its script folder instead, not the user's.
    """
    folder = os.getcwd()
    sys.path.insert(0, folder)
    try:
        yield
    finally:
        sys.path.remove(folder)


def build_command(resolved_config: Path, workers: int, servers: int, mode: str = "local",
                  hostfile: str | Path | None = None) -> list[str]:
    """The command that starts ``workers + servers + 1`` ranks of ``python -m paracel``."""
    if workers < 1 or servers < 1:
        raise ValueError("a job needs at least one worker (-w) and one server (-p)")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
    nranks = str(workers + servers + 1)
    rank_cmd = [sys.executable, "-m", "paracel", str(resolved_config), "--servers", str(servers)]
    if mode == "slurm":
        return ["srun", "-n", nranks, *rank_cmd]
    cmd = [mpiexec_path(), "-n", nranks]
    if mode == "mpi":
        if hostfile is None:
            raise ValueError("mode 'mpi' needs --hostfile")
        cmd += ["-f", str(hostfile)]
    return cmd + rank_cmd


#: Ranks already fill the cores; BLAS thread pools on top would oversubscribe them and spin.
SINGLE_THREADED = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def job_env() -> dict[str, str]:
    """The ranks' environment: the caller's, with the current folder importable (user algorithms)
    and single-threaded BLAS unless the caller set thread counts."""
    path = [os.getcwd(), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**SINGLE_THREADED, **os.environ, "PYTHONPATH": os.pathsep.join(path), "PYTHONUNBUFFERED": "1"}


def launch(config: str | Path | dict[str, Any], workers: int = 1, servers: int = 1, staleness: Any = _KEEP,
           overrides: Sequence[str] = (), output: str | Path | None = None, mode: str = "local",
           hostfile: str | Path | None = None, timeout: float | None = None, capture: bool = True) -> LaunchResult:
    """Run a paracel job as an MPI subprocess and wait for it (for scripts and notebooks).

    Returns a ``LaunchResult``; raises ``ConfigError`` before starting anything if the config
    is invalid, ``JobFailed`` (with the ranks' error output) if the job exits non-zero, and
    ``subprocess.TimeoutExpired`` after killing every rank if it outlives ``timeout`` seconds.
    """
    job, resolved = prepare(config, staleness, overrides, output)
    cmd = build_command(resolved, workers, servers, mode, hostfile)
    done = run_command(cmd, timeout=timeout, env=job_env(), capture=capture)
    result = LaunchResult(done.returncode, Path(job.output), done.stdout or "", done.stderr or "")
    if done.returncode != 0:
        # ranks report failures on stderr (and in report files, in case MPI_Abort lost it);
        # MPI's own report of a killed rank goes to stdout
        output = result.stdout + result.stderr
        missed = [r for r in failure_reports(result.output_dir) if r.strip() not in output]
        output += "".join(missed)
        text = "".join(missed) + result.stderr if missed else result.stderr
        tail = "\n".join((text.strip() or result.stdout.strip()).splitlines()[-40:])
        raise JobFailed(f"paracel job {job.algorithm} failed (exit {done.returncode}):\n{tail}",
                        done.returncode, output)
    return result


def failure_reports(output_dir: Path) -> list[str]:
    """The reports of the ranks that failed in the job whose output folder is ``output_dir``
    (rank order; empty if none failed or none could write its report)."""
    paths = sorted(Path(output_dir).glob(f"{FAILURE_PREFIX}*.txt"),
                   key=lambda p: int(p.stem[len(FAILURE_PREFIX):]))
    return [p.read_text(encoding="utf-8", errors="replace") for p in paths]


def main(argv: list[str] | None = None) -> int:
    """``prun``: validate a config and run it on W workers, S servers and the clock rank."""
    parser = argparse.ArgumentParser(prog="prun", description="Run a paracel job under MPI.")
    parser.add_argument("-w", "--workers", type=int, default=2, help="worker ranks (default 2)")
    parser.add_argument("-p", "--servers", type=int, default=1, help="parameter-server ranks (default 1)")
    parser.add_argument("-m", "--mode", choices=MODES, default="local",
                        help="local: this machine; mpi: hosts from --hostfile; slurm: srun")
    parser.add_argument("--hostfile", help="MPI host file (mode mpi)")
    parser.add_argument("-c", "--config", required=True, help="job config (JSON)")
    parser.add_argument("--staleness", type=_staleness, default=_KEEP,
                        help="override the SSP bound: an int >= 0, or 'none' for asynchronous")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set params.rounds=5 (repeatable)")
    parser.add_argument("-o", "--output", help="output folder (overrides the config's)")
    parser.add_argument("--timeout", type=float, help="kill the job after this many seconds")
    parser.add_argument("--dry-run", action="store_true", help="print the command and exit")
    args = parser.parse_args(argv)
    try:
        job, resolved = prepare(args.config, args.staleness, args.overrides, args.output)
        cmd = build_command(resolved, args.workers, args.servers, args.mode, args.hostfile)
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"prun: error: {exc}", file=sys.stderr)
        return 2
    print(" ".join(shlex.quote(c) for c in cmd), flush=True)
    if args.dry_run:
        return 0
    try:
        done = run_command(cmd, timeout=args.timeout, env=job_env(), capture=False)
    except subprocess.TimeoutExpired:
        print(f"prun: error: job killed after {args.timeout} s", file=sys.stderr)
        return 124
    if done.returncode != 0:
        # the ranks' own reports went to stderr above, unless MPI_Abort cut them off: name them
        failed = [r.splitlines()[0].removeprefix("paracel: ") + " " + r.strip().splitlines()[-1]
                  for r in failure_reports(Path(job.output)) if r.strip()]
        print(f"prun: job failed with exit code {done.returncode}"
              + "".join(f"\nprun: {line}" for line in failed), file=sys.stderr)
    else:
        print(f"prun: done; output in {job.output}", flush=True)
    return done.returncode


def _staleness(text: str) -> int | None:
    if text.lower() in ("none", "null", "inf", "async"):
        return None
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("staleness must be >= 0 (or 'none')")
    return value
