"""Which rank plays which role (DESIGN §1): workers 0..W-1, servers W..W+S-1, clock W+S."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Layout:
    """The ranks of a job with ``nworkers`` workers and ``nservers`` parameter servers."""

    nworkers: int
    nservers: int

    @classmethod
    def from_world(cls, world_size: int, nservers: int) -> "Layout":
        """Layout of a world of ``world_size`` ranks; raises ``ValueError`` if it leaves no worker."""
        nworkers = world_size - nservers - 1
        if nservers < 1 or nworkers < 1:
            raise ValueError(f"{world_size} ranks cannot hold >= 1 worker, {nservers} server(s) and the clock")
        return cls(nworkers, nservers)

    @property
    def clock_rank(self) -> int:
        return self.nworkers + self.nservers

    def server_rank(self, server: int) -> int:
        return self.nworkers + server

    def role(self, rank: int) -> str:
        """``"worker"``, ``"server"`` or ``"clock"``."""
        if rank < self.nworkers:
            return "worker"
        return "server" if rank < self.clock_rank else "clock"
