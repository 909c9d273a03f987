"""Algorithms and update functions of the reliability tests (run by real ranks)."""
from __future__ import annotations

import json
import time

import msgpack
import numpy as np
from mpi4py import MPI

from paracel import paralg
from paracel.batch import KeyBatch
from paracel.protocol import Pull
from paracel.waiting import probe
from paracel.wire import TAG_DATA, TAG_REPLY, TAG_REQUEST


class Sleeper(paralg):
    """Every worker says it started (``started_<id>``) and then sleeps: a job that must be stopped."""

    def __init__(self, seconds: float = 120.0):
        self.seconds = seconds

    def solve(self) -> None:
        (self.output_dir / f"started_{self.get_worker_id()}").touch()
        time.sleep(self.seconds)


def never_returns(old, delta):
    """A user update function stuck for an hour (an endless loop or a deadlock in user code)."""
    time.sleep(3600)


class StuckUpdate(paralg):
    """Worker 0 calls an update function that never returns; the others wait in ``sync()``.

    ``then_big``: the update is batched, and worker 0 then writes an array too large for MPI to
    take before the stuck server receives it.
    """

    def __init__(self, then_big: bool = False):
        self.then_big = then_big

    def solve(self) -> None:
        if self.get_worker_id() == 0:
            self.paracel_write("k", 1.0)  # present, so that the update calls the function
            if self.then_big:
                self.paracel_bupdate("k", 1.0, fn="tests.reliability_jobs:never_returns")
                self.paracel_write("big", np.zeros(2_000_000))
            self.paracel_update("k", 1.0, fn="tests.reliability_jobs:never_returns")
        self.sync()


class HostileInput(paralg):
    """Worker 0 tries keys and deltas paracel must refuse, and records what each raised."""

    def solve(self) -> None:
        if self.get_worker_id() == 0:
            self.paracel_write("ints", np.zeros(3, np.int32))
            attempts = {
                "float key": lambda: self.paracel_write(1.5, 1.0),
                "bool key": lambda: self.paracel_write(True, 1.0),
                "huge key": lambda: self.paracel_read(2**70),
                "float onto int32": lambda: self.paracel_update("ints", np.ones(3)),
                "other shape": lambda: self.paracel_bupdate("ints", np.ones(4, np.int32)),
            }
            caught = {}
            for name, attempt in attempts.items():
                try:
                    attempt()
                    self.sync() if name == "other shape" else None  # a batched update fails at the flush
                except Exception as exc:
                    caught[name] = f"{type(exc).__name__}: {exc}"
            self.paracel_update("ints", np.ones(3, np.int64))  # int64 onto int32: allowed, stays int32
            ints = self.paracel_read("ints")
            caught["ints"] = [ints.dtype.str, ints.tolist(), self.paracel_contains(1)]
            (self.output_dir / "result.json").write_text(json.dumps(caught))


class Garbage(paralg):
    """Worker 0 sends a server messages it cannot decode, each followed by a valid read, and
    records the error replies and the reads."""

    def solve(self) -> None:
        if self.get_worker_id() != 0:
            return
        client = self._client
        rank = client.layout.server_rank(0)
        self.paracel_write("k", 1.0)
        garbage = [b"\xc1 not msgpack", msgpack.packb([1, 2]), msgpack.packb({"op": "pull", "nb": []}),
                   msgpack.packb({"op": "pull", "kk": "s", "n": 1, "nb": [3, 16]})]
        replies = []
        for packed in garbage:
            client.comm.Send([packed, MPI.BYTE], rank, TAG_REQUEST)
            if packed == garbage[-1]:  # framed right, with buffers that contradict the header
                client.comm.Send([b"abc", MPI.BYTE], rank, TAG_DATA)
                client.comm.Send([np.array([0, 7]), MPI.BYTE], rank, TAG_DATA)
            probe(client.comm, rank, TAG_REPLY, client.status)
            header = client.receiver.header(client.status)
            reply = Pull(KeyBatch.of([0])).read_reply(header, client.receiver.payload(rank, header, reuse=False))
            replies.append([type(reply).__name__, getattr(reply, "message", ""), self.paracel_read("k")])
        (self.output_dir / "result.json").write_text(json.dumps(replies))


class Busy(paralg):
    """Workers update and commit for up to ``seconds`` (servers and the clock kept busy), after
    saying they started (``started_<id>``)."""

    def __init__(self, seconds: float = 120.0):
        self.seconds = seconds

    def solve(self) -> None:
        (self.output_dir / f"started_{self.get_worker_id()}").touch()
        end = time.monotonic() + self.seconds
        while time.monotonic() < end:
            self.paracel_bupdate_multi(np.arange(100), np.ones(100))
            self.paracel_read_multi(np.arange(100))
            self.iter_commit()
            time.sleep(0.01)
