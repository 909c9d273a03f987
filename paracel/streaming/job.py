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
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Annotated, Any, Mapping, get_type_hints

import numpy as np

from paracel.batch import Key
from paracel.paralg import paralg
from paracel.params import Constraint, Mismatch, NonNegativeInt, PositiveFloat, PositiveInt, conform
from paracel.streaming.logic import WorkerLogic
from paracel.streaming.sources import STDIN, open_source
from paracel.streaming.transport import AsyncParams
from paracel.streaming.worker import StreamStats, StreamWorker, owner


class StreamInput(Constraint):
    """A stream's input: ``"-"`` (standard input) or an existing file, relative to the current folder."""

    def accepts(self, value: Any) -> bool:
        return value == STDIN or Path(value).is_file()

    def __str__(self) -> str:
        return "naming an existing file, or '-' for standard input"


@dataclass(frozen=True)
class StreamOptions:
    """The settings of a stream (config ``params.stream``).

    ``input``: a file, or ``"-"`` for standard input (one worker only); ``follow``: follow the
    file as it grows until a ``sentinel`` line or SIGTERM/SIGINT; ``order_by``: replay a finite
    file sorted by this 0-based numeric field; ``shuffle``: replay it in a random order drawn
    from this seed (a new order each pass); ``passes``: read a finite file this many times;
    ``max_pending_pulls``: the pull limit per worker; ``batch``: pulls or pushes a worker
    gathers before it sends them (fewer when input pauses or the limit is reached);
    ``updates_every``: seconds between emissions of the model-update stream (None: none).
    """

    input: Annotated[str, StreamInput()]
    follow: bool = False
    sentinel: str | None = None
    order_by: NonNegativeInt | None = None
    shuffle: NonNegativeInt | None = None
    passes: PositiveInt = 1
    max_pending_pulls: PositiveInt = 256
    batch: PositiveInt = 64
    updates_every: PositiveFloat | None = None

    @classmethod
    def of(cls, settings: Mapping[str, Any]) -> StreamOptions:
        """The options a config's ``params.stream`` object gives.

        Raises ``paracel.params.Mismatch`` naming the field at fault (its ``path``, e.g.
        ``.batch``) for an unknown, missing or ill-typed field.
        """
        hints = get_type_hints(cls, include_extras=True)
        given = {}
        for name, value in settings.items():
            if name not in hints:
                raise Mismatch(f"a stream setting ({', '.join(hints)})", name, f".{name}")
            try:
                given[name] = conform(value, hints[name])
            except Mismatch as exc:
                raise exc.inside(f".{name}") from None
        if "input" not in given:
            raise Mismatch("given: the file to read, or '-' for standard input", None, ".input")
        options = cls(**given)
        options._check_replay()
        return options

    def _check_replay(self) -> None:
        """Passes, order and shuffle replay a finite file; a replay is ordered or shuffled."""
        live = "a followed file" if self.follow else "standard input" if self.input == STDIN else None
        for name, default in (("passes", 1), ("order_by", None), ("shuffle", None)):
            if live and getattr(self, name) != default:
                raise Mismatch(f"{default} for {live} (only a finite file is replayed)", getattr(self, name),
                               f".{name}")
        if self.order_by is not None and self.shuffle is not None:
            raise Mismatch("None when order_by is given (a replay is ordered or shuffled)", self.shuffle, ".shuffle")


class ValidStream(Constraint):
    """Config check of ``params.stream``: what ``StreamOptions.of`` accepts (a bad field
    raises ``Mismatch``, so the config error names it)."""

    def accepts(self, value: Any) -> bool:
        StreamOptions.of(value)
        return True

    def __str__(self) -> str:
        return "stream settings"


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
        """The record of the stream's line number ``position`` (from 0), or None to skip the
        line; a ``ValueError`` (why the line is bad) fails the job with the input and line named."""
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

    def owns(self, key: Key) -> bool:
        """Whether this worker gets the records whose ``partition_key`` is ``key`` (e.g. to keep
        only its users' rows of a seed model)."""
        return owner(key, self.get_worker_size()) == self.get_worker_id()

    def before_stream(self) -> None:
        """Collective set-up before the stream (e.g. seeding the servers from a batch model)."""

    def after_stream(self, logic: WorkerLogic) -> None:
        """Collective wrap-up after every worker's stream has ended and its pushes are applied."""

    # -- outputs
    def _file(self, stem: str, suffix: str) -> IO[str]:
        """This worker's output file ``<stem>_<w><suffix>``, line-buffered so that whoever
        follows it sees every line as soon as it is written."""
        if stem not in self._files:
            path = self.output_dir / f"{stem}_{self.get_worker_id()}{suffix}"
            self._files[stem] = open(path, "w", encoding="utf-8", buffering=1)
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
        source = open_source(opts.input, opts.follow, opts.sentinel, opts.passes, opts.order_by, opts.shuffle,
                             self.get_worker_size())
        self._t0 = time.perf_counter()
        try:
            try:
                self.stats = worker.run(source)
            finally:
                source.close()
            summary = self.stats.summary()
            (self.output_dir / f"stream_{self.get_worker_id()}.json").write_text(json.dumps(summary) + "\n")
            self.sync()  # every worker's pushes are applied
            self.after_stream(logic)
        finally:
            for out in self._files.values():
                out.close()


def _plain(value: Any) -> Any:
    """JSON for numpy values in outputs."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write a {type(value).__name__} to the output stream")
