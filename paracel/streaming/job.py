"""``StreamJob``: a ``paralg`` that trains online on a stream, run by ``prun`` like any other.

A streaming algorithm subclasses ``StreamJob`` and defines the job (the seed's
``transform(trainingData, workerLogic, paramInit, paramUpdate, ...)``): ``parse`` (a line to a
record), ``partition_key`` (records with equal keys go to one worker, so its local state lives
there), ``worker_logic`` (a fresh ``WorkerLogic``), ``param_init`` (a key's initial value) and
``param_update`` (the server's update function). Its config's ``params.stream`` holds the
stream settings (``StreamOptions``).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, fields
from typing import IO, Annotated, Any, Mapping

import numpy as np

from paracel.batch import Key
from paracel.paralg import paralg
from paracel.params import Constraint
from paracel.streaming.sources import open_source
from paracel.streaming.transport import AsyncParams
from paracel.streaming.worker import StreamStats, StreamWorker, WorkerLogic


@dataclass(frozen=True)
class StreamOptions:
    """The settings of a stream (config ``params.stream``).

    ``input``: a file, or ``"-"`` for standard input (one worker only); ``follow``: follow the
    file as it grows until a ``sentinel`` line or SIGTERM/SIGINT; ``order_by``: replay a finite
    file sorted by this 0-based numeric field; ``passes``: read a finite file this many times;
    ``max_pending_pulls``: the pull limit per worker; ``pull_batch``: pulls sent per request at
    most; ``updates_every``: seconds between emissions of the model-update stream (None: none).
    """

    input: str
    follow: bool = False
    sentinel: str | None = None
    order_by: int | None = None
    passes: int = 1
    max_pending_pulls: int = 256
    pull_batch: int = 64
    updates_every: float | None = None

    @classmethod
    def of(cls, settings: Mapping[str, Any]) -> StreamOptions:
        """The options a config's ``params.stream`` object gives; raises ``ValueError`` naming
        the field at fault."""
        if not isinstance(settings, Mapping):
            raise ValueError(f"params.stream must be an object, got {settings!r}")
        known = {f.name: f for f in fields(cls)}
        for name, value in settings.items():
            if name not in known:
                raise ValueError(f"unknown field 'params.stream.{name}' (accepted: {', '.join(known)})")
            if not _fits(name, value):
                raise ValueError(f"field 'params.stream.{name}' must be {_EXPECTED[name]}, got {value!r}")
        if "input" not in settings:
            raise ValueError("missing field 'params.stream.input'")
        return cls(**settings)


_EXPECTED = {"input": "a path or '-'", "follow": "true or false", "sentinel": "a string or null",
             "order_by": "an int >= 0 or null", "passes": "an int >= 1", "max_pending_pulls": "an int >= 1",
             "pull_batch": "an int >= 1", "updates_every": "a number > 0 or null"}


def _fits(name: str, value: Any) -> bool:
    is_int = type(value) is int
    return {"input": isinstance(value, str) and bool(value), "follow": type(value) is bool,
            "sentinel": value is None or isinstance(value, str), "order_by": value is None or (is_int and value >= 0),
            "passes": is_int and value >= 1, "max_pending_pulls": is_int and value >= 1,
            "pull_batch": is_int and value >= 1,
            "updates_every": value is None or (type(value) in (int, float) and value > 0)}[name]


class ValidStream(Constraint):
    """Config check of ``params.stream``: what ``StreamOptions.of`` accepts."""

    def accepts(self, value: Any) -> bool:
        try:
            StreamOptions.of(value)
        except ValueError:
            return False
        return True

    def __str__(self) -> str:
        return "stream settings {input, follow, sentinel, order_by, passes, max_pending_pulls, pull_batch, " \
               "updates_every}"


#: The annotation of a streaming algorithm's ``stream`` parameter.
StreamSettings = Annotated[dict, ValidStream()]


class StreamJob(paralg):
    """Base of streaming algorithms: ``solve()`` runs ``before_stream``, the stream through
    ``worker_logic()``'s callbacks, then ``after_stream`` (both collective over the workers).

    Outputs, in the output folder: ``ps.output`` items as JSON lines in ``outputs_<w>.jsonl``
    and the model-update stream as ``seconds<TAB>key<TAB>v_0,v_1,...`` lines in
    ``updates_<w>.tsv`` (override ``on_output`` / ``on_model_update`` to send them elsewhere),
    and the stream's figures (``StreamStats.summary``) in ``stream_<w>.json``.
    """

    #: The servers' update function for pushes: a built-in name or "package.module:function".
    param_update: str = "add"

    def __init__(self, stream: StreamSettings) -> None:
        self.stream = StreamOptions.of(stream)
        self._files: dict[str, IO[str]] = {}
        self._t0 = 0.0
        self.stats = StreamStats()

    # -- the job definition
    def parse(self, line: str, position: int) -> Any:
        """The record of input line number ``position`` (from 0), or None to skip the line."""
        raise NotImplementedError(f"{type(self).__name__} must implement parse()")

    def partition_key(self, record: Any) -> Key:
        """The key that decides which worker gets ``record``."""
        raise NotImplementedError(f"{type(self).__name__} must implement partition_key()")

    def worker_logic(self) -> WorkerLogic:
        """This worker's ``WorkerLogic`` (built after ``before_stream``)."""
        raise NotImplementedError(f"{type(self).__name__} must implement worker_logic()")

    def param_init(self, key: Key) -> Any:
        """A key's value before any push: a function of the key alone, so that every worker
        that initialises it agrees (sent once per worker; the first to arrive is kept)."""
        return 0.0

    def before_stream(self) -> None:
        """Collective set-up before the stream (e.g. seeding the servers from a batch model)."""

    def after_stream(self, logic: WorkerLogic) -> None:
        """Collective wrap-up after every worker's stream has ended and its pushes are applied."""

    # -- outputs
    def _file(self, stem: str, suffix: str) -> IO[str]:
        if stem not in self._files:
            path = self.output_dir / f"{stem}_{self.get_worker_id()}{suffix}"
            self._files[stem] = open(path, "w", encoding="utf-8")
        return self._files[stem]

    def on_output(self, item: Any) -> None:
        """Where ``ps.output(item)`` goes: a JSON line of ``outputs_<w>.jsonl``."""
        self._file("outputs", ".jsonl").write(json.dumps(item, default=_plain) + "\n")

    def on_model_update(self, keys: list[Key], values: list[Any]) -> None:
        """Where the model-update stream goes: ``updates_<w>.tsv`` (seconds since the stream began)."""
        out, now = self._file("updates", ".tsv"), time.perf_counter() - self._t0
        for key, value in zip(keys, values):
            out.write(f"{now:.6f}\t{key}\t{','.join(map(repr, np.ravel(value).tolist()))}\n")

    # -- the run
    def solve(self) -> None:
        self.before_stream()
        self.sync()  # seeded parameters are in place before anyone pulls
        logic = self.worker_logic()
        client = self._client
        params = AsyncParams(client.comm, client.layout, client.request_timeout)
        worker = StreamWorker(self, logic, params, self.stream, self.get_worker_id(), self.get_worker_size())
        opts = self.stream
        source = open_source(opts.input, opts.follow, opts.sentinel, opts.passes, opts.order_by,
                             self.get_worker_size())
        self._t0 = time.perf_counter()
        try:
            self.stats = worker.run(source)
        finally:
            source.close()
            for out in self._files.values():
                out.close()
        summary = self.stats.summary()
        (self.output_dir / f"stream_{self.get_worker_id()}.json").write_text(json.dumps(summary) + "\n")
        self.sync()  # every worker's pushes are applied
        self.after_stream(logic)


def _plain(value: Any) -> Any:
    """JSON for numpy values in outputs."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write a {type(value).__name__} to the output stream")
