"""Build and run the MPI command of a paracel job (``prun``), from the shell or from Python."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path


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
