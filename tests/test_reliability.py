"""Reliability on real ranks: no orphaned or hung jobs, hostile input refused, nothing lost under load."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI

from paracel import JobFailed, launch
from paracel.config import DEFAULT_REQUEST_TIMEOUT, load_config
from paracel.errors import ConfigError, RequestTimeout
from paracel.waiting import probe
from paracel.wire import Receiver, Sends

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 60


def job_processes(marker: str) -> dict[int, int | None]:
    """{pid: MPI rank (None for mpiexec)} of the processes whose command line mentions ``marker``
    (a job's output folder)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (entry / "environ").read_bytes().split(b"\0") if marker in cmdline else []
        except OSError:  # gone meanwhile
            continue
        if marker in cmdline:
            ranks = [int(v.split(b"=", 1)[1]) for v in environ if v.startswith(b"PMI_RANK=")]
            found[int(entry.name)] = ranks[0] if ranks else None
    return found


def wait_for(predicate, seconds: float) -> bool:
    """Whether ``predicate()`` became true within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def start_job(tmp_path: Path, launcher: list[str], algorithm: str = "Sleeper") -> tuple[subprocess.Popen, Path]:
    """Start a job of 2 workers running ``tests.reliability_jobs.<algorithm>`` (1 server);
    returns once both are in ``solve()``."""
    out = tmp_path / "out"
    config = tmp_path / "job.json"
    config.write_text(json.dumps({"algorithm": f"tests.reliability_jobs:{algorithm}", "output": str(out)}))
    proc = subprocess.Popen([sys.executable, *launcher, str(config)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    if not wait_for(lambda: len(list(out.glob("started_*"))) == 2, TIMEOUT):
        proc.kill()
        pytest.fail(f"the job did not start: {proc.communicate()[0]}")
    return proc, out


def ended_within_10s(proc: subprocess.Popen, out: Path) -> str:
    """The launcher's output, once it and every process of its job (output folder ``out``)
    ended within 10 s, with a non-zero exit; fails the test (and kills them) otherwise."""
    deadline = time.monotonic() + 10
    try:
        output, _ = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        output = f"the launcher did not exit within 10 s\n{proc.communicate()[0]}"
    gone = wait_for(lambda: not job_processes(str(out)), max(0.0, deadline - time.monotonic()))
    left = job_processes(str(out))
    for pid in left:  # never leave them to the next test
        os.kill(pid, signal.SIGKILL)
    assert gone and not output.startswith("the launcher did not exit"), f"{output}\nstill running: {left}"
    assert proc.returncode != 0
    return output


LAUNCH_FROM_PYTHON = ["-c", "import sys; from paracel import launch; "
                            "launch(sys.argv[1], workers=2, servers=1, capture=False)"]


@pytest.mark.parametrize("launcher, sig", [
    (["prun.py", "-w", "2", "-p", "1", "-c"], signal.SIGTERM),
    (["prun.py", "-w", "2", "-p", "1", "-c"], signal.SIGINT),
    (["prun.py", "-w", "2", "-p", "1", "-c"], signal.SIGKILL),
    (LAUNCH_FROM_PYTHON, signal.SIGTERM),
    (LAUNCH_FROM_PYTHON, signal.SIGINT),
], ids=["prun-TERM", "prun-INT", "prun-KILL", "launch-TERM", "launch-INT"])
def test_a_stopped_launcher_leaves_no_rank_behind(tmp_path, launcher, sig):
    proc, out = start_job(tmp_path, launcher)
    assert sorted(job_processes(str(out)).values(), key=str) == [0, 1, 2, 3, None]  # the ranks and mpiexec
    proc.send_signal(sig)
    output = ended_within_10s(proc, out)
    if sig != signal.SIGKILL and launcher[0] == "prun.py":
        assert proc.returncode == 128 + sig
        assert f"prun: error: job stopped by {signal.Signals(sig).name}" in output


@pytest.mark.parametrize("rank", [1, 2, 3], ids=["worker", "server", "clock"])
def test_a_killed_rank_of_any_role_ends_the_job(tmp_path, rank):
    proc, out = start_job(tmp_path, ["prun.py", "-w", "2", "-p", "1", "-c"], "Busy")
    [pid] = [pid for pid, r in job_processes(str(out)).items() if r == rank]
    os.kill(pid, signal.SIGKILL)
    output = ended_within_10s(proc, out)
    assert "signal 9" in output or "KILLED" in output, output


@pytest.mark.parametrize("then_big, message", [
    (False, "RequestTimeout: server rank 2 did not answer update within 3 s (config 'request_timeout')"),
    (True, "RequestTimeout: server rank 2 did not take push within 3 s (config 'request_timeout')"),
])
def test_a_request_without_reply_fails_the_job_with_the_rank_and_operation(tmp_path, then_big, message):
    start = time.monotonic()
    config = {"algorithm": "tests.reliability_jobs:StuckUpdate", "params": {"then_big": then_big},
              "output": str(tmp_path / "out"), "request_timeout": 3}
    with pytest.raises(JobFailed) as info:
        launch(config, workers=2, servers=1, timeout=TIMEOUT)
    assert time.monotonic() - start < 30  # a 3 s wait, not the 60 s job timeout
    assert message in info.value.output


def test_hostile_keys_and_values_are_refused_by_name_on_real_ranks(tmp_path):
    launch({"algorithm": "tests.reliability_jobs:HostileInput", "output": str(tmp_path / "out")},
           workers=2, servers=2, timeout=TIMEOUT)
    got = json.loads((tmp_path / "out" / "result.json").read_text())
    assert got["ints"] == ["<i4", [1, 1, 1], False]  # unchanged by the refused updates; the float key not stored
    assert got["float key"] == "TypeError: key 1.5 is a float: keys are int (64-bit) or str"
    assert got["bool key"] == "TypeError: key True is a bool: keys are int (64-bit) or str"
    assert got["huge key"] == f"ValueError: int key {2**70} is out of the 64-bit range [-2**63, 2**63)"
    assert got["float onto int32"].startswith("ServerError: server rank ")
    assert got["float onto int32"].endswith(": TypeError: update 'add' of key 'ints': a float64 delta cannot "
                                            "change the stored int32 value (numpy casts 'same_kind' only; cast the "
                                            "delta first)")
    assert "ValueError: update 'add' of key 'ints': a delta of shape (4,) cannot change the stored value's shape (3,)" \
        in got["other shape"]


def test_messages_that_cannot_be_decoded_get_error_replies_and_the_server_goes_on(tmp_path):
    launch({"algorithm": "tests.reliability_jobs:Garbage", "output": str(tmp_path / "out"), "cache": False},
           workers=2, servers=1, timeout=TIMEOUT)
    got = json.loads((tmp_path / "out" / "result.json").read_text())
    assert [kind for kind, _, _ in got] == ["ErrorReply"] * 4 and [read for _, _, read in got] == [1.0] * 4
    messages = [message for _, message, _ in got]
    assert messages[0].startswith("not a msgpack header")
    assert messages[1] == "the header is a list, not a map"
    assert messages[2] == "cannot decode a 'pull' request: a batch's count must be an int >= 0, got None"
    assert messages[3] == "cannot decode a 'pull' request: str key offsets do not split the 3 key bytes"


def test_a_short_soak_ends_with_exact_totals(tmp_path):
    """benchmarks/soak.py in a few seconds: 4 workers, 2 servers, mixed reads and updates."""
    launch({"algorithm": "benchmarks.soak:Soak", "staleness": 2, "output": str(tmp_path / "out"),
            "params": {"keys": 20_000, "seconds": 3.0, "batch": 500}}, workers=4, servers=2, timeout=TIMEOUT)
    got = json.loads((tmp_path / "out" / "soak.json").read_text())
    assert got["exact"] and got["wrong_values"] == 0
    assert got["rounds"] >= 4 * 10 and got["keys_per_s"] > 0


@pytest.mark.parametrize("value, ok", [(5, True), (0.5, True), (None, True), (0, False), (-1, False), ("10", False),
                                       (True, False)])
def test_request_timeout_is_seconds_or_null(value, ok):
    config = {"algorithm": "tests.reliability_jobs:Sleeper", "request_timeout": value}
    if ok:
        assert load_config(config).request_timeout == value
    else:
        with pytest.raises(ConfigError, match="field 'request_timeout' must be a number of seconds > 0, or null"):
            load_config(config)
    assert load_config({"algorithm": "tests.reliability_jobs:Sleeper"}).request_timeout == DEFAULT_REQUEST_TIMEOUT


def test_probe_gives_up_after_its_timeout_naming_what_it_waited_for():
    status = MPI.Status()
    start = time.monotonic()
    with pytest.raises(RequestTimeout, match=r"^server rank 3 did not answer pull within 0.2 s \(config 'request_"):
        probe(MPI.COMM_SELF, 0, 99, status, 0.2, lambda: "server rank 3 did not answer pull")
    assert 0.2 <= time.monotonic() - start < 5
    request = MPI.COMM_SELF.Isend([b"x", MPI.BYTE], 0, 99)
    probe(MPI.COMM_SELF, 0, 99, status, 0.2)  # there: no wait
    MPI.COMM_SELF.Recv([bytearray(1), MPI.BYTE], 0, 99)
    request.Wait()


def test_a_send_nobody_takes_gives_up_after_its_timeout():
    big = np.zeros(1_000_000)  # too large for MPI to take before it is received
    sends = Sends()
    sends.post(MPI.COMM_SELF, 0, 77, {}, [big])
    with pytest.raises(RequestTimeout, match=r"^rank 0 did not take push within 0.2 s"):
        sends.wait(0.2, lambda: "rank 0 did not take push")
    assert len(sends) == 1  # still pending: MPI may read its buffers
    status = MPI.Status()
    probe(MPI.COMM_SELF, 0, 77, status, 5)  # now receive it, so that nothing stays pending
    receiver = Receiver(MPI.COMM_SELF)
    header = receiver.header(status)
    assert receiver.payload(0, header, reuse=False)[0].nbytes == big.nbytes
    sends.wait(5)
    assert len(sends) == 0
