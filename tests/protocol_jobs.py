"""Algorithms for the protocol's real-rank tests: a worker asks for operations nobody serves."""
from __future__ import annotations

import json

from paracel import ParacelError, paralg
from paracel.protocol import Request


class Frobnicate(Request):
    """An operation neither the servers nor the clock rank serve."""

    op = "frobnicate"


class FrobnicateUnawaited(Frobnicate):
    """The same, sent without waiting for a reply (so no one can be told it failed)."""

    @property
    def awaits_reply(self) -> bool:
        return False


class AsksUnknown(paralg):
    """Worker 0 sends ``Frobnicate`` to the clock rank and to a server.

    ``mode`` "caught": it records the exceptions, then every worker goes on updating, committing
    and syncing (so both ranks must still serve); "uncaught": the exception ends the job;
    "unawaited": it sends the clock a request that waits for no reply, then commits.
    """

    def __init__(self, mode: str = "caught"):
        self.mode = mode

    def solve(self) -> None:
        client = self._client
        targets = {"clock": client.layout.clock_rank, "server": client.layout.server_rank(0)}
        caught = {}
        if self.get_worker_id() == 0 and self.mode == "unawaited":
            client.call([(targets["clock"], FrobnicateUnawaited())])
        elif self.get_worker_id() == 0:
            for name, rank in targets.items():
                try:
                    client.call([(rank, Frobnicate())])
                except ParacelError as exc:
                    if self.mode == "uncaught":
                        raise
                    caught[name] = f"{type(exc).__name__}: {exc}"
        for _ in range(3):
            self.paracel_bupdate("n", 1)
            self.iter_commit()
        self.sync()
        if self.get_worker_id() == 0:
            result = {"caught": caught, "n": self.paracel_read("n")}
            (self.output_dir / "result.json").write_text(json.dumps(result))
