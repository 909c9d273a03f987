"""The loaders users call: ``load``, ``loadall`` and ``sequential_loadall`` (all collective).

Format options, accepted by every loader as keywords and passed to ``make_format``:
``columns`` (csv/tsv/whitespace layout, e.g. ``["user:int", "item:int", "rating:float"]``),
``header`` (lines to skip at the top of each file), ``comment`` (a line starting with it is
skipped; ``#`` for edges), ``n_features`` (libsvm), ``dim`` (fvec), ``delimiter``.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, Union

import numpy as np
from mpi4py import MPI

from paracel import collectives

from .errors import LoadError
from .formats import Format, FvecFormat, LibsvmFormat, make_format
from .inputs import InputFile, Pattern, describe, resolve
from .records import LoadInfo, Lines, Records, SparseRows, Table, Text
from .shuffle import shuffle_table
from .split import DEFAULT_BLOCK, Piece, assign, chunks, whole

Result = Union[Lines, Text, Records, Table, SparseRows]
ON_ERROR = ("raise", "skip")


def load(pattern: Pattern, *, comm: MPI.Intracomm, fmt: str | Callable = "lines",
         shuffle: str | None = None, row_key: str | None = None, col_key: str | None = None,
         on_error: str = "raise", block_bytes: int = DEFAULT_BLOCK, **format_options: Any) -> Result:
    """Collective: this worker's share of the files matching ``pattern``, parsed by ``fmt``.

    The inputs (a file, a folder walked recursively, a glob, or a list of them; ``.gz`` is
    decompressed) are split across the workers of ``comm`` by bytes on line boundaries: every
    line is read by exactly one worker. ``fmt`` is ``lines`` (:class:`Lines`), ``text``
    (:class:`Text`: the share's text without an object per line), ``libsvm``
    (:class:`SparseRows`, n_features agreed by all workers unless given), ``ratings``, ``edges``,
    ``docword``, ``fvec``, ``csv``/``tsv``/``whitespace`` (:class:`Table`), or a user parser
    (callable or ``"package.module:function"``, see ``formats.UserFormat``).

    ``shuffle`` (``fmap``/``smap``/``fsmap``, Table results only) then moves every record to the
    worker owning its ``row_key``/``col_key`` (defaults: the format's row and column ids, e.g.
    user and item), see :mod:`paracel.loading.shuffle`.

    Raises :class:`LoadError` on every worker if any worker meets a malformed line (the
    message names file and line; ``on_error="skip"`` drops and counts such lines instead, in
    ``result.info``), a missing path or an empty glob; ValueError for bad options.
    """
    form = _format(fmt, on_error, format_options)
    rank, size = comm.Get_rank(), comm.Get_size()
    result = _read_all(pattern, form, comm, lambda files: assign(files, rank, size),
                       on_error, block_bytes)
    _agree_shape(result, form, comm)
    if shuffle is not None:
        if not isinstance(result, Table):
            raise ValueError(f"shuffle {shuffle!r} needs a table format, not {fmt!r}")
        keys = getattr(form, "keys", (None, None, None))
        result.columns = shuffle_table(result.columns, shuffle, row_key or keys[0],
                                       col_key or keys[1], comm)
    return result


def loadall(pattern: Pattern, *, comm: MPI.Intracomm, fmt: str | Callable = "lines",
            on_error: str = "raise", block_bytes: int = DEFAULT_BLOCK,
            **format_options: Any) -> Result:
    """Collective: every worker reads and parses all files matching ``pattern`` (as :func:`load`
    without splitting or shuffling); errors are raised on every worker as in :func:`load`."""
    form = _format(fmt, on_error, format_options)
    return _read_all(pattern, form, comm, whole, on_error, block_bytes)


def sequential_loadall(pattern: Pattern, callback: Callable[[Result], Any], *,
                       comm: MPI.Intracomm, fmt: str | Callable = "lines",
                       on_error: str = "raise", block_bytes: int = DEFAULT_BLOCK,
                       **format_options: Any) -> LoadInfo:
    """Collective: stream all files through ``callback``, one parsed block (about
    ``block_bytes`` of text, whole lines) at a time, on every worker, in file order.

    Memory stays bounded by one block. Every worker checks each block with the others before
    its callback sees it, so a malformed line (or a callback that raised on any worker) stops
    every worker with an error before any of them uses that block; the callback may therefore
    use ``comm`` collectives. Returns counts: ``meta["blocks"]``, ``meta["records"]``.
    """
    form = _format(fmt, on_error, format_options)
    skip = on_error == "skip"
    info = LoadInfo(meta={"blocks": 0, "records": 0})
    error, stream = None, iter(())
    try:
        files = _files(pattern, form)
        info.meta.update(_header_meta(form, files))
        stream = chunks(whole(files), block_bytes)
    except Exception as exc:  # noqa: BLE001 - agreed on below, then re-raised
        error = exc
    agree(comm, error)
    while True:
        block, error = None, None
        try:
            chunk = next(stream, None)
            if chunk is not None:
                part, n, first = form.parse(chunk, skip)
                block = form.combine([part])
                info.skipped += n
                info.first_skipped = info.first_skipped or first
        except Exception as exc:  # noqa: BLE001
            error = exc
        agree(comm, error)
        if block is None:
            break
        try:
            callback(block)
        except Exception as exc:  # noqa: BLE001
            error = exc
        agree(comm, error)
        info.meta["blocks"] += 1
        info.meta["records"] += len(block)
    _report(info, comm, every_worker_reads_all=True)
    return info


def agree(comm: MPI.Intracomm, error: BaseException | None) -> None:
    """Collective: raise on every worker if any worker failed, so none goes on with partial data.

    The failing worker re-raises its own exception; the others raise a :class:`LoadError`
    quoting the first failing rank's message (this also keeps them out of a later collective
    that the failed worker would never enter).
    """
    message = None if error is None else f"{type(error).__name__}: {error}"
    messages = collectives.allgather(comm, message)
    if error is not None:
        raise error
    for rank, msg in enumerate(messages):
        if msg is not None:
            raise LoadError(f"loading failed on worker {rank}: {msg}")


def _format(fmt: str | Callable, on_error: str, options: dict[str, Any]) -> Format:
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, not {on_error!r}")
    return make_format(fmt, **options)


def _files(pattern: Pattern, form: Format) -> list[InputFile]:
    return describe(resolve(pattern), form.header)


def _header_meta(form: Format, files: list[InputFile]) -> dict[str, Any]:
    return form.header_meta(files) if hasattr(form, "header_meta") else {}


def _read_all(pattern: Pattern, form: Format, comm: MPI.Intracomm,
              pieces_of: Callable[[list[InputFile]], list[Piece]], on_error: str,
              block_bytes: int) -> Result:
    skip = on_error == "skip"
    info, result, error = LoadInfo(), None, None
    try:
        parts, files = [], _files(pattern, form)
        info.meta.update(_header_meta(form, files))
        for chunk in chunks(pieces_of(files), block_bytes):
            part, n, first = form.parse(chunk, skip)
            parts.append(part)
            info.skipped += n
            info.first_skipped = info.first_skipped or first
        result = form.combine(parts)
    except Exception as exc:  # noqa: BLE001 - agreed on below, then re-raised
        error = exc
    agree(comm, error)
    result.info = info
    _report(info, comm, every_worker_reads_all=pieces_of is whole)
    return result


def _report(info: LoadInfo, comm: MPI.Intracomm, every_worker_reads_all: bool) -> None:
    """Fill ``skipped_total`` and warn (once, on rank 0) about skipped lines."""
    counts = collectives.allgather(comm, (info.skipped, info.first_skipped))
    info.skipped_total = counts[0][0] if every_worker_reads_all else sum(c for c, _ in counts)
    firsts = [f for _, f in counts if f]
    if info.skipped_total and comm.Get_rank() == 0:
        warnings.warn(f"skipped {info.skipped_total} malformed line(s); first: {firsts[0]}",
                      stacklevel=3)


def _agree_shape(result: Result, form: Format, comm: MPI.Intracomm) -> None:
    """Collective: the same feature count (libsvm) or vector length (fvec) on every worker."""
    if isinstance(form, LibsvmFormat) and form.n_features is None:
        X = result.X
        n = int(collectives.allreduce(comm, X.shape[1], "max"))
        import scipy.sparse as sp  # here: a lines job need not import scipy (0.1 s per rank)
        result.X = sp.csr_matrix((X.data, X.indices, X.indptr), shape=(X.shape[0], n))
    elif isinstance(form, FvecFormat):
        dims = {d for d in collectives.allgather(comm, form.dim if len(result) else None) if d is not None}
        if len(dims) > 1:
            raise LoadError(f"fvec vectors have different lengths on different workers: "
                            f"{sorted(dims)}")
        if dims and not len(result):
            result.columns["values"] = np.empty((0, dims.pop()), np.float64)
