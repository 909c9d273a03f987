"""``paralg``: the base class of every paracel algorithm (the user's whole API, DESIGN §2)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from paracel.batch import Key

if TYPE_CHECKING:
    import scipy.sparse as sp
    from mpi4py import MPI

    from paracel.client import ParamClient
    from paracel.collectives import ReduceOp
    from paracel.ratings import Owner, Ratings


@dataclass
class WorkerContext:
    """What the runtime hands a worker's algorithm before ``solve()``."""

    client: "ParamClient"
    worker_comm: "MPI.Intracomm"
    output_dir: Path
    #: Clocks between automatic checkpoints (None: only ``paracel_checkpoint()``).
    checkpoint_every: int | None = None


class paralg:  # noqa: N801 - the name users know from Paracel
    """Subclass this and implement ``solve()``; it runs on every worker rank.

    The config's ``params`` are passed to your ``__init__`` as keyword arguments (so its
    signature is the algorithm's config schema). Inside ``solve()`` use the ``paracel_*``
    methods to read and update the shared parameters and ``iter_commit()`` to end an iteration.
    """

    _ctx: WorkerContext | None = None
    _total_iters: int | None = None

    def solve(self) -> None:
        """The algorithm: runs once on every worker."""
        raise NotImplementedError(f"{type(self).__name__} must implement solve()")

    def attach(self, ctx: WorkerContext) -> None:
        """Connect to the runtime (done by paracel before ``solve()``); from now on the client
        counts where this worker's time and bytes go (``paracel.usage``)."""
        from paracel.usage import Usage
        self._ctx = ctx
        ctx.client.usage = Usage(ctx.client)

    @property
    def _client(self) -> "ParamClient":
        if self._ctx is None:
            raise RuntimeError("paracel API used outside a running job (e.g. in __init__)")
        return self._ctx.client

    # -- who am I
    def get_worker_id(self) -> int:
        """This worker's id, 0 .. get_worker_size()-1."""
        return self._ctx.worker_comm.Get_rank()

    def get_worker_size(self) -> int:
        """The number of workers."""
        return self._ctx.worker_comm.Get_size()

    def get_staleness(self) -> int | None:
        """The job's SSP bound: an int >= 0 (0 = BSP), or None for asynchronous."""
        return self._client.staleness

    @property
    def worker_comm(self) -> "MPI.Intracomm":
        """An MPI communicator of the workers only, for collectives among them."""
        return self._ctx.worker_comm

    @property
    def output_dir(self) -> Path:
        """The job's output folder (exists)."""
        return self._ctx.output_dir

    # -- data (paracel.loading; each is collective over the workers)
    def paracel_load(self, pattern: Any, **options: Any) -> Any:
        """This worker's share of the files in ``pattern``, parsed; see ``paracel.loading.load``."""
        from paracel.loading import load
        return load(pattern, comm=self.worker_comm, **options)

    def paracel_load_as_graph(self, pattern: Any, **options: Any) -> Any:
        """A graph shard (out/in adjacency); see ``paracel.loading.load_as_graph``."""
        from paracel.loading import load_as_graph
        return load_as_graph(pattern, comm=self.worker_comm, **options)

    def paracel_load_as_matrix(self, pattern: Any, **options: Any) -> Any:
        """A matrix shard with row/column id maps; see ``paracel.loading.load_as_matrix``."""
        from paracel.loading import load_as_matrix
        return load_as_matrix(pattern, comm=self.worker_comm, **options)

    def paracel_load_labeled(self, pattern: Any, fmt: str = "libsvm", n_features: int | None = None,
                             everywhere: bool = False) -> Any:
        """Labelled rows (``X`` CSR, ``y``) from LIBSVM or dense CSV ``f_1,...,f_k,label``: this
        worker's share, or every row with ``everywhere``; see ``paracel.loading.load_labeled``."""
        from paracel.loading import load_labeled
        return load_labeled(pattern, comm=self.worker_comm, fmt=fmt, n_features=n_features, everywhere=everywhere)

    def paracel_loadall(self, pattern: Any, **options: Any) -> Any:
        """Every file in ``pattern`` on every worker; see ``paracel.loading.loadall``."""
        from paracel.loading import loadall
        return loadall(pattern, comm=self.worker_comm, **options)

    def paracel_sequential_loadall(self, pattern: Any, callback: Any, **options: Any) -> Any:
        """Stream all files through ``callback`` block by block; see
        ``paracel.loading.sequential_loadall``."""
        from paracel.loading import sequential_loadall
        return sequential_loadall(pattern, callback, comm=self.worker_comm, **options)

    def paracel_load_ratings(self, pattern: Any, by: "Owner" = "user") -> "Ratings":
        """This worker's ratings (``user item rating [time]`` lines), every rating of a user
        (``by="user"``) or of an item (``by="item"``) on one worker; see ``paracel.ratings``."""
        from paracel.ratings import load_ratings
        return load_ratings(pattern, self.worker_comm, by)

    def paracel_loadall_ratings(self, pattern: Any) -> "Ratings":
        """Every rating in ``pattern`` on every worker; see ``paracel.ratings``."""
        from paracel.ratings import loadall_ratings
        return loadall_ratings(pattern, self.worker_comm)

    # -- collectives over the workers (paracel.collectives: they wait without spinning; every
    #    worker must call them in the same order). Like the loaders, imported when called: they
    #    start MPI, and the launcher imports this module only to check a config.
    def allreduce(self, values: Any, op: "ReduceOp" = "sum") -> np.ndarray:
        """Element-wise ``op`` ("sum", "min", "max") of every worker's numeric array (same
        shape and dtype on every worker, kept in the result)."""
        from paracel import collectives
        return collectives.allreduce(self.worker_comm, values, op)

    def allreduce_sparse(self, matrix: "sp.spmatrix") -> "sp.csr_matrix":
        """Element-wise sum of every worker's sparse matrix (same shape), as CSR; with disjoint
        entries, the whole matrix on every worker."""
        from paracel import collectives
        return collectives.allreduce_sparse(self.worker_comm, matrix)

    def allgather_array(self, rows: Any) -> np.ndarray:
        """Every worker's ``rows`` (n_w, *shape) concatenated along axis 0, in worker order."""
        from paracel import collectives
        return collectives.allgather_array(self.worker_comm, rows)

    def union_ids(self, ids: Any) -> np.ndarray:
        """The sorted unique int64 ids held by any worker."""
        from paracel import collectives
        return collectives.union_ids(self.worker_comm, ids)

    def gather(self, obj: Any, root: int = 0) -> list[Any] | None:
        """Every worker's picklable ``obj`` in worker order on worker ``root``, None elsewhere."""
        from paracel import collectives
        return collectives.gather(self.worker_comm, obj, root)

    def bcast(self, obj: Any, root: int = 0) -> Any:
        """Worker ``root``'s picklable ``obj`` on every worker."""
        from paracel import collectives
        return collectives.bcast(self.worker_comm, obj, root)

    def allgather(self, obj: Any) -> list[Any]:
        """Every worker's picklable ``obj`` in worker order, on every worker."""
        from paracel import collectives
        return collectives.allgather(self.worker_comm, obj)

    # -- parameters
    def paracel_read(self, key: Key) -> Any:
        """The value of ``key`` as stored (same type, dtype and shape); raises ``KeyError``."""
        return self._client.read([key])[0]

    def paracel_read_multi(self, keys: Sequence[Key] | np.ndarray, as_array: bool = False) -> list[Any] | np.ndarray:
        """Values of ``keys`` in order: a list, or with ``as_array`` one array (n, *shape)."""
        return self._client.read(keys, as_array=as_array)

    def paracel_read_rows(self, keys: np.ndarray, width: int, present: np.ndarray | None = None) -> np.ndarray:
        """Float64 rows (len(keys), width) of ``keys``; where the bool mask ``present`` is false
        the row is zero and not read (e.g. ids the model has no row for)."""
        out = np.zeros((len(keys), width))
        where = np.ones(len(keys), bool) if present is None else np.asarray(present, bool)
        if where.any():
            rows = self.paracel_read_multi(np.asarray(keys)[where], as_array=True)
            out[where] = np.asarray(rows, dtype=np.float64).reshape(-1, width)
        return out

    def paracel_write(self, key: Key, value: Any) -> None:
        """Store ``value`` (a number or numpy array) under ``key``."""
        self._client.write([key], [value])

    def paracel_write_multi(self, keys: Mapping[Key, Any] | Sequence[Key] | np.ndarray,
                            values: Sequence[Any] | np.ndarray | None = None) -> None:
        """Store many values: a dict, or ``keys`` and ``values`` (a list, or an array whose
        rows are the values — rows of a 1-D array are stored as numpy scalars)."""
        if isinstance(keys, Mapping):
            keys, values = list(keys.keys()), list(keys.values())
        self._client.write(keys, values)

    def paracel_update(self, key: Key, delta: Any, fn: str = "add") -> None:
        """Apply ``fn(old, delta)`` on the server and wait until applied (an absent key
        stores ``delta``). ``fn``: add, sub, mul, max, min, replace or "package.module:function"."""
        self._client.update([key], [delta], fn)

    def paracel_bupdate(self, key: Key, delta: Any, fn: str = "add") -> None:
        """Like ``paracel_update`` but may return before the server applies it; errors are
        raised at the next ``iter_commit``/``sync``."""
        self._client.update([key], [delta], fn, wait_applied=False)

    def paracel_bupdate_multi(self, keys: Sequence[Key] | np.ndarray, deltas: Sequence[Any] | np.ndarray,
                              fn: str = "add") -> None:
        """Batched ``paracel_bupdate`` of many keys (``deltas``: a list or one row per key)."""
        self._client.update(keys, deltas, fn, wait_applied=False)

    def paracel_remove(self, key: Key) -> bool:
        """Delete ``key``; returns whether it existed."""
        return self._client.remove([key]) == 1

    def paracel_contains(self, key: Key) -> bool:
        """Whether some server holds ``key``."""
        return bool(self._client.contains([key])[0])

    def paracel_read_topk(self, k: int, prefix: str | None = None) -> list[tuple[Key, Any]]:
        """The ``k`` (key, value) pairs with the largest scalar values (optionally only str
        keys starting with ``prefix``), largest first, ties by key."""
        return self._client.topk(k, prefix)

    def paracel_read_prefix(self, prefix: str) -> dict[str, Any]:
        """Every str key starting with ``prefix`` and its value (a key family)."""
        return self._client.items(prefix)

    def paracel_readall(self, keyfilter: Callable[[Key], bool] | None = None) -> dict[Key, Any]:
        """The whole table, or the entries whose key passes ``keyfilter``."""
        table = self._client.items()
        return table if keyfilter is None else {k: v for k, v in table.items() if keyfilter(k)}

    # -- synchronisation
    def iter_commit(self) -> None:
        """End this worker's iteration (clock); may wait for slower workers (SSP). With the
        config's ``checkpoint_every`` N, every N-th clock also writes a checkpoint (collective:
        every worker must commit as many clocks)."""
        self._client.commit()
        every = self._ctx.checkpoint_every
        if every and self._client.clock % every == 0:
            self.paracel_checkpoint()

    def get_clock(self) -> int:
        """This worker's clock: the ``iter_commit`` calls so far (in a resumed job, counting
        those before the checkpoint it resumed from)."""
        return self._client.clock

    # -- checkpoints
    def paracel_checkpoint(self) -> Path:
        """Collective of all workers, at the same clock: write a consistent checkpoint (every
        server's shard and every worker's ``save_state()``) to ``checkpoints/clock-N/`` in the
        output folder, atomically; returns that folder. ``prun --resume`` restarts from it."""
        from paracel import checkpoint
        return checkpoint.take(self, self._client).path

    def save_state(self) -> dict[str, Any] | None:
        """Override to checkpoint this worker's local state (e.g. its rows of a model, its
        random generator, its round): a dict of numpy arrays and plain data (numbers, str,
        lists, dicts), or None if the algorithm keeps nothing between clocks but what the
        servers hold (and continues from ``get_clock()``). An algorithm that does not override
        it can be checkpointed but not resumed (``prun --resume`` refuses it)."""
        return None

    def load_state(self, state: dict[str, Any]) -> None:
        """Override to restore what ``save_state`` returned (arrays come back as arrays, tuples
        as lists); called before ``solve()`` in a resumed job, which then continues from there."""
        raise NotImplementedError(f"{type(self).__name__} saved state but does not implement load_state()")

    def sync(self) -> None:
        """Barrier of all workers; afterwards every worker's updates are visible to all."""
        self._client.sync()

    def set_total_iters(self, n: int) -> None:
        """Declare how many clocks (``iter_commit`` calls) each worker will run — or, for an
        algorithm that never commits, how many metrics rows it will log: the progress shows
        how far the job is along them, and its rate and ETA."""
        self._total_iters = n
        self._tell_clock(total=int(n))

    def _tell_clock(self, **report: Any) -> None:
        """Send the clock rank a ``paracel.protocol.Report`` (imported here: it starts MPI)."""
        from paracel.protocol import Report
        self._client.call([(self._client.layout.clock_rank, Report(**report))])

    # -- output
    def paracel_dump(self, name: str, data: Mapping[Any, Any] | np.ndarray, gather: bool = False) -> Path | None:
        """Write ``data`` to the output folder and return the file written (None on workers
        that wrote nothing).

        A dict is written as ``key<TAB>value`` lines (array values comma-separated), an array
        as ``.npy``. Per worker as ``NAME_<id>`` unless ``gather``, where worker 0 writes one
        file ``NAME`` with every worker's dict (dicts only).
        """
        if isinstance(data, np.ndarray):
            if gather:
                raise ValueError("gather=True is for dicts")
            path = self.output_dir / f"{name}_{self.get_worker_id()}.npy"
            np.save(path, data)
            return path
        if gather:
            parts = self.gather(dict(data))
            if self.get_worker_id() != 0:
                return None
            data = {k: v for part in parts for k, v in part.items()}
            path = self.output_dir / f"{name}.txt"
        else:
            path = self.output_dir / f"{name}_{self.get_worker_id()}.txt"
        with open(path, "w", encoding="utf-8") as out:
            for key, value in data.items():
                text = ",".join(map(str, np.ravel(value))) if isinstance(value, np.ndarray) else str(value)
                out.write(f"{key}\t{text}\n")
        return path

    def log_metrics(self, step: int, **metrics: float | None) -> None:
        """Record this worker's metrics of iteration ``step`` (numbers; None for "no value", e.g.
        the error on an empty test set): appended to ``metrics_<id>.jsonl`` in the output folder
        and sent to the clock rank, which shows them in the progress and writes them to
        ``metrics.jsonl``. Raises ``ParacelError`` naming the metric and step if a value is
        NaN or infinite (a diverged loss ends the job), ``TypeError`` if it is not a number."""
        from paracel.metrics import checked_metrics
        row = checked_metrics(step, metrics)
        with open(self.output_dir / f"metrics_{self.get_worker_id()}.jsonl", "a", encoding="utf-8") as out:
            out.write(json.dumps({"step": step, **row}) + "\n")
        self._tell_clock(step=int(step), values=row)
