"""Launch real MPI jobs from tests, always under a timeout (a hung job fails the test, never the suite)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from paracel.launch import mpiexec_path, run_command

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def run_ranks(nranks: int, args: list[str], timeout: float = 120.0,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``mpiexec -n nranks python ARGS...`` from the repo root; returns the completed process.

    Raises ``subprocess.TimeoutExpired`` if the job outlives ``timeout`` seconds (its whole
    process group is killed first).
    """
    cmd = [mpiexec_path(), "-n", str(nranks), sys.executable, *args]
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return run_command(cmd, timeout=timeout, env=full_env, cwd=ROOT)
