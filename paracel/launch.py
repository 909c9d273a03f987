"""Build and run the MPI command of a paracel job (``prun``), from the shell or from Python."""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from paracel.config import JobConfig, load_config
from paracel.errors import JobFailed, JobInterrupted, ParacelError

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
    """Run ``cmd`` in its own session and wait for it; no process of it outlives the wait.

    On a timeout, an exception or a signal (SIGINT raises ``KeyboardInterrupt``, SIGTERM and
    SIGHUP raise ``JobInterrupted`` while this waits in the main thread) the command is stopped
    (``stop_session``) and the exception re-raised. If this process is killed outright, the
    command gets SIGTERM from the kernel (``die_with_parent``).
    """
    pipe = subprocess.PIPE if capture else None
    with _signals_raise():
        proc = subprocess.Popen(cmd, stdout=pipe, stderr=pipe, text=True, env=env, cwd=cwd,
                                start_new_session=True, preexec_fn=die_with_parent)
        try:
            out, err = proc.communicate(timeout=timeout)
        except BaseException:
            stop_session(proc)
            raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


#: Seconds ``stop_session`` leaves a job to end on SIGTERM before it kills what is left.
STOP_GRACE = 3.0


def stop_session(proc: subprocess.Popen, grace: float = STOP_GRACE) -> None:
    """End ``proc`` (a session leader) and its session: SIGTERM, then SIGKILL after ``grace`` s.

    ``mpiexec`` forwards the SIGTERM to every rank and waits for them; the ranks run in
    sessions of their own (hydra's), so only it can reach them, and a rank whose launcher
    dies is killed by the kernel (``die_with_parent``).
    """
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.communicate(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Have the kernel send ``sig`` to this process when its parent dies (Linux; elsewhere a
    no-op): a launcher killed outright (SIGKILL) then still ends its job."""
    parent = os.getppid()
    try:
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, sig)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), sig)


PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
#: Signals that end a waiting launcher through ``JobInterrupted`` (SIGINT: ``KeyboardInterrupt``).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _raise_interrupted(signum: int, frame: Any) -> None:
    raise JobInterrupted(signum)


@contextmanager
def _signals_raise() -> Iterator[None]:
    """While inside, SIGTERM and SIGHUP raise ``JobInterrupted`` (main thread only, where Python
    runs handlers; signals whose handler the program set itself are left alone)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig, handler in previous.items():
        if handler in (signal.SIG_DFL, None):
            signal.signal(sig, _raise_interrupted)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            if handler in (signal.SIG_DFL, None):
                signal.signal(sig, signal.SIG_DFL)


MODES = ("local", "mpi", "slurm")


@dataclass
class LaunchResult:
    """A finished job: exit code, output folder, and its captured output (if captured)."""

    returncode: int
    output_dir: Path
    stdout: str = ""
    stderr: str = ""


def prepare(config: str | Path | dict[str, Any], staleness: Any = _KEEP, overrides: Sequence[str] = (),
            output: str | Path | None = None, resume: str | Path | None = None) -> tuple[JobConfig, Path]:
    """Validate the config with its overrides, create the output folder and write the
    resolved config there as ``config.json``; returns (config, resolved config path).

    ``resume``: an earlier run's output folder; the job writes there again and starts from its
    newest complete checkpoint (``ParacelError`` if it has none).
    """
    items = list(overrides)
    if staleness is not _KEEP:
        items.append(f"staleness={json.dumps(staleness)}")
    if resume is not None:
        from paracel.checkpoint import newest
        items.append(f"resume={json.dumps(str(newest(Path(resume)).path.resolve()))}")
        output = resume
    if output is not None:
        items.append(f"output={json.dumps(str(output))}")
    with _current_folder_importable():
        job = load_config(config, items)
    out = Path(job.output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(f"{FAILURE_PREFIX}*.txt"):  # an earlier run's: they would blame this one
        stale.unlink()
    if resume is not None:
        keep_earlier_record(out)
    job.output = str(out)
    resolved = out / "config.json"
    resolved.write_text(job.to_json() + "\n", encoding="utf-8")
    return job, resolved


def keep_earlier_record(out: Path) -> None:
    """Before a resumed job writes its own, rename the earlier attempt's ``run.json`` and
    ``metrics.jsonl`` in ``out`` to ``run.N.json`` and ``metrics.N.jsonl`` (N = 1, 2, ... the
    first free), so every attempt's record is kept."""
    n = 1
    while (out / f"run.{n}.json").exists() or (out / f"metrics.{n}.jsonl").exists():
        n += 1
    for name, suffix in (("run", ".json"), ("metrics", ".jsonl")):
        earlier = out / f"{name}{suffix}"
        if earlier.exists():
            earlier.rename(out / f"{name}.{n}{suffix}")


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


def run_job(job: JobConfig, cmd: list[str], workers: int, servers: int, mode: str, timeout: float | None,
            progress: str, capture: bool) -> subprocess.CompletedProcess:
    """Run a prepared job's command, recorded in ``run.json`` (``paracel.record``), with the
    clock rank showing its progress as ``progress`` ("bar", "lines" or "quiet")."""
    from paracel.progress import PROGRESS_ENV
    from paracel.record import recorded
    env = {**job_env(), PROGRESS_ENV: progress}
    if progress == "bar":  # the clock rank's stdout is a pipe: tell it how wide the terminal is
        env["COLUMNS"] = str(shutil.get_terminal_size().columns)
    with recorded(job, cmd, workers, servers, mode) as record:
        done = run_command(cmd, timeout=timeout, env=env, capture=capture)
        record.end(done.returncode)
    return done


def launch(config: str | Path | dict[str, Any], workers: int = 1, servers: int = 1, staleness: Any = _KEEP,
           overrides: Sequence[str] = (), output: str | Path | None = None, mode: str = "local",
           hostfile: str | Path | None = None, timeout: float | None = None, capture: bool = True,
           progress: str = "lines", resume: str | Path | None = None) -> LaunchResult:
    """Run a paracel job as an MPI subprocess and wait for it (for scripts and notebooks).

    ``progress``: what the job prints as it runs — "lines" (a line per metrics row), "bar" (a
    tqdm bar, for a terminal) or "quiet". Returns a ``LaunchResult``; raises ``ConfigError``
    before starting anything if the config is invalid, ``JobFailed`` (with the ranks' error
    output) if the job exits non-zero, and ``subprocess.TimeoutExpired`` after killing every
    rank if it outlives ``timeout`` seconds. The output folder gets ``run.json``. ``resume``: an
    earlier run's output folder, to continue from its newest checkpoint (see ``prepare``).
    """
    job, resolved = prepare(config, staleness, overrides, output, resume)
    cmd = build_command(resolved, workers, servers, mode, hostfile)
    done = run_job(job, cmd, workers, servers, mode, timeout, progress, capture)
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
    """``prun``: validate a config and run it on W workers, S servers and the clock rank;
    ``prun report DIR...``: write the HTML report of finished runs (``paracel.report``)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["report"]:
        from paracel.report import main as report_main
        return report_main(argv[1:])
    parser = argparse.ArgumentParser(prog="prun", description="Run a paracel job under MPI "
                                     "(or: prun report OUTPUT_DIR [DIR ...] to report finished runs).")
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
    parser.add_argument("-q", "--quiet", action="store_true", help="show no progress")
    parser.add_argument("--report", action="store_true", help="write report.html in the output folder afterwards")
    parser.add_argument("--resume", metavar="OUTPUT_DIR",
                        help="continue the run in OUTPUT_DIR from its newest complete checkpoint")
    args = parser.parse_args(argv)
    try:
        job, resolved = prepare(args.config, args.staleness, args.overrides, args.output, args.resume)
        cmd = build_command(resolved, args.workers, args.servers, args.mode, args.hostfile)
    except (ParacelError, ValueError, FileNotFoundError) as exc:
        print(f"prun: error: {exc}", file=sys.stderr)
        return 2
    print(" ".join(shlex.quote(c) for c in cmd), flush=True)
    if args.dry_run:
        return 0
    progress = "quiet" if args.quiet else "bar" if sys.stdout.isatty() else "lines"
    try:
        done = run_job(job, cmd, args.workers, args.servers, args.mode, args.timeout, progress, capture=False)
    except subprocess.TimeoutExpired:
        print(f"prun: error: job killed after {args.timeout} s", file=sys.stderr)
        return 124
    except KeyboardInterrupt as exc:  # SIGINT, or SIGTERM/SIGHUP as JobInterrupted: the job is stopped
        signum = exc.signum if isinstance(exc, JobInterrupted) else signal.SIGINT
        print(f"prun: error: job stopped by {signal.Signals(signum).name}", file=sys.stderr)
        return 128 + signum
    if done.returncode != 0:
        # the ranks' own reports went to stderr above, unless MPI_Abort cut them off: name them
        failed = [r.splitlines()[0].removeprefix("paracel: ") + " " + r.strip().splitlines()[-1]
                  for r in failure_reports(Path(job.output)) if r.strip()]
        print(f"prun: job failed with exit code {done.returncode}"
              + "".join(f"\nprun: {line}" for line in failed), file=sys.stderr)
    else:
        print(f"prun: done; output in {job.output}", flush=True)
    if args.report:  # a failed run's report shows how far it got
        from paracel.report import ReportError, write_report
        try:
            print(f"prun: report in {write_report([Path(job.output)])}", flush=True)
        except ReportError as exc:
            print(f"prun: error: no report: {exc}", file=sys.stderr)
            return done.returncode or 2
    return done.returncode


def _staleness(text: str) -> int | None:
    if text.lower() in ("none", "null", "inf", "async"):
        return None
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("staleness must be >= 0 (or 'none')")
    return value
