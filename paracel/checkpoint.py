"""Checkpoints: a job's state at a clock boundary, on disk, written so a crash never spoils one.

A checkpoint is a folder ``OUTPUT/checkpoints/clock-NNNNNNNN/`` holding

- ``server-<i>.npz``: server ``i``'s shard of the table. Per block of values of one signature
  ``b``: ``b<b>.data`` (the values, one row per key), ``b<b>.py`` (how they were given),
  ``b<b>.ints`` (int keys) and ``b<b>.blob`` / ``b<b>.offsets`` (str keys as UTF-8 bytes and
  n+1 offsets); the rows of ``data`` are the int keys' values, then the str keys'.
- ``worker-<w>.npz`` and ``worker-<w>.msgpack``: what worker ``w``'s algorithm returned from
  ``save_state()``, its numpy arrays in the ``.npz`` and everything else in the msgpack map.
- ``MANIFEST.json``, written last: ``{"format": "paracel-checkpoint", "version": 1, "clock",
  "workers", "servers", "files": {name: bytes}}``. A folder without it is incomplete.

Every file is written to a temporary name, fsynced and renamed, so it is whole or absent.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Iterator

import msgpack
import numpy as np

from paracel.batch import KeyBatch, ValueBatch
from paracel.errors import ParacelError
from paracel.table import ROW_BITS, ROW_MASK, ShardTable

if TYPE_CHECKING:
    from paracel.client import ParamClient
    from paracel.paralg import paralg

FORMAT = "paracel-checkpoint"
VERSION = 1
MANIFEST = "MANIFEST.json"
FOLDER = "checkpoints"
#: Complete checkpoints kept: the newest, and the one before it.
KEEP = 2
#: Keys per message when a resumed job writes a saved shard back to the servers.
RESTORE_BATCH = 100_000


@dataclass(frozen=True)
class Checkpoint:
    """A complete checkpoint on disk."""

    path: Path
    clock: int
    workers: int
    servers: int

    def server_files(self) -> list[Path]:
        return [self.path / f"server-{i}.npz" for i in range(self.servers)]


def folder_for(output_dir: Path, clock: int) -> Path:
    """Where the checkpoint of ``clock`` is written."""
    return Path(output_dir) / FOLDER / f"clock-{clock:08d}"


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write ``path`` through ``write(file)``: to a temporary name, fsynced, then renamed."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------- server shards
def save_shard(table: ShardTable, path: Path) -> None:
    """Write a server's shard of the table to ``path`` (an ``.npz``, atomically)."""
    ints, int_slots = table.index.int_items()
    blob, offsets, str_slots = table.index.str_items()
    str_keys = KeyBatch(blob=blob, offsets=offsets)
    arrays: dict[str, np.ndarray] = {}
    for bid, block in enumerate(table.blocks):
        mine_i = (int_slots >> ROW_BITS) == bid
        mine_s = (str_slots >> ROW_BITS) == bid
        if not (mine_i.any() or mine_s.any()):
            continue
        rows = np.concatenate([int_slots[mine_i], str_slots[mine_s]]) & ROW_MASK
        strs = str_keys.take(np.flatnonzero(mine_s))
        arrays |= {f"b{bid}.data": np.take(block.data, rows, axis=0), f"b{bid}.py": np.array(block.py),
                   f"b{bid}.ints": ints[mine_i], f"b{bid}.blob": strs.blob, f"b{bid}.offsets": strs.offsets}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda out: np.savez(out, **arrays))


def load_shard(path: Path) -> Iterator[tuple[KeyBatch, ValueBatch]]:
    """The (keys, values) batches of a saved shard, one or two per block (int keys, str keys)."""
    with np.load(path, allow_pickle=False) as saved:
        blocks = sorted({name.split(".")[0] for name in saved.files})
        for block in blocks:
            data, py, ints = saved[f"{block}.data"], int(saved[f"{block}.py"]), saved[f"{block}.ints"]
            strs = KeyBatch(blob=saved[f"{block}.blob"], offsets=saved[f"{block}.offsets"])
            if len(ints):
                yield KeyBatch(ints=ints), ValueBatch(dense=data[:len(ints)], py=py)
            if len(strs):
                yield strs, ValueBatch(dense=data[len(ints):], py=py)


# ---------------------------------------------------------------------------- worker state
#: msgpack extension type of an int beyond 64 bits (e.g. in a numpy generator's state), as text.
BIG_INT = 1


def _packable(value: Any) -> Any:
    """``value`` with ints beyond 64 bits as msgpack extensions (msgpack holds 64 bits)."""
    if isinstance(value, bool) or not isinstance(value, (int, dict, list, tuple)):
        return value
    if isinstance(value, int):
        return value if -2**63 <= value < 2**64 else msgpack.ExtType(BIG_INT, str(value).encode())
    if isinstance(value, dict):
        return {k: _packable(v) for k, v in value.items()}
    return [_packable(v) for v in value]


def _unpack_ext(code: int, data: bytes) -> Any:
    if code == BIG_INT:
        return int(data)
    return msgpack.ExtType(code, data)


def save_worker_state(folder: Path, worker: int, state: dict[str, Any]) -> None:
    """Write what a worker's ``save_state()`` returned: arrays to ``.npz``, the rest to msgpack
    (numbers, str, bytes, bool, None, lists and dicts of them; tuples come back as lists).

    Raises ``TypeError`` naming the entry if a non-array value cannot be packed.
    """
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise TypeError(f"save_state() must return a dict with str keys, not {type(state).__name__}")
    arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
    rest = {}
    for key, value in state.items():
        if isinstance(value, np.ndarray):
            continue
        try:
            rest[key] = msgpack.packb(_packable(value))
        except (TypeError, ValueError, OverflowError) as exc:
            raise TypeError(f"save_state() entry {key!r} is neither a numpy array nor msgpack data: {exc}") from None
    atomic_write(folder / f"worker-{worker}.npz", lambda out: np.savez(out, **arrays))
    atomic_write(folder / f"worker-{worker}.msgpack", lambda out: out.write(msgpack.packb(rest)))


def load_worker_state(folder: Path, worker: int) -> dict[str, Any]:
    """The state worker ``worker`` saved (arrays and plain data, as given to ``save_state``)."""
    with np.load(folder / f"worker-{worker}.npz", allow_pickle=False) as saved:
        state: dict[str, Any] = {k: saved[k] for k in saved.files}
    packed = msgpack.unpackb((folder / f"worker-{worker}.msgpack").read_bytes())
    state |= {k: msgpack.unpackb(v, ext_hook=_unpack_ext, strict_map_key=False) for k, v in packed.items()}
    return state


# ---------------------------------------------------------------------------- manifests
def write_manifest(folder: Path, clock: int, workers: int, servers: int) -> Checkpoint:
    """Seal a checkpoint whose files are all written: the manifest lists them with sizes."""
    files = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if not p.name.startswith(".")}
    manifest = {"format": FORMAT, "version": VERSION, "clock": clock, "workers": workers, "servers": servers,
                "files": files}
    atomic_write(folder / MANIFEST, lambda out: out.write(json.dumps(manifest, indent=1).encode()))
    return Checkpoint(folder, clock, workers, servers)


def read_manifest(folder: Path) -> Checkpoint | None:
    """The checkpoint in ``folder`` if it is complete (sealed, every file there with its size)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("format") != FORMAT:
        return None
    if manifest.get("version") != VERSION:
        raise ParacelError(f"{folder}: checkpoint format version {manifest.get('version')}, this paracel reads "
                           f"version {VERSION}")
    for name, size in manifest["files"].items():
        try:
            if (folder / name).stat().st_size != size:
                return None
        except OSError:
            return None
    return Checkpoint(folder, manifest["clock"], manifest["workers"], manifest["servers"])


def complete(output_dir: Path) -> list[Checkpoint]:
    """The complete checkpoints of a job's output folder, oldest first."""
    root = Path(output_dir) / FOLDER
    found = [read_manifest(p) for p in sorted(root.glob("clock-*"))] if root.is_dir() else []
    return sorted((c for c in found if c is not None), key=lambda c: c.clock)


def newest(output_dir: Path) -> Checkpoint:
    """The newest complete checkpoint; raises ``ParacelError`` if there is none."""
    found = complete(output_dir)
    if not found:
        raise ParacelError(f"{output_dir}: no complete checkpoint to resume from (looked in {FOLDER}/)")
    return found[-1]


def prune(output_dir: Path, keep: int = KEEP) -> None:
    """Delete all but the newest ``keep`` complete checkpoints, and incomplete ones older than
    the newest complete one (left by a crash)."""
    kept = complete(output_dir)[-keep:]
    if not kept:
        return
    keep_paths = {c.path for c in kept}
    for folder in (Path(output_dir) / FOLDER).glob("clock-*"):
        if folder not in keep_paths and folder.name < kept[-1].path.name:
            shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------------------- taking and resuming
def take(alg: "paralg", client: "ParamClient") -> Checkpoint:
    """Collective of all workers, at the same clock: write a checkpoint of that clock.

    A ``sync()`` first, so every update is applied and no worker changes the table meanwhile;
    then each worker saves its ``save_state()``, worker 0 has every server save its shard, and
    once all files are written worker 0 seals the checkpoint with its manifest and prunes old
    ones. Returns once the checkpoint is sealed (on every worker).
    """
    alg.sync()
    low, high = alg.allreduce(np.array([-client.clock, client.clock]), "max").tolist()
    if -low != high:
        raise ParacelError(f"paracel_checkpoint() needs every worker at the same clock; clocks range {-low}..{high}")
    folder = folder_for(alg.output_dir, client.clock)
    folder.mkdir(parents=True, exist_ok=True)
    worker, layout = alg.get_worker_id(), client.layout
    state = alg.save_state()
    if state is not None:
        save_worker_state(folder, worker, state)
    if worker == 0:
        from paracel.protocol import Save
        client.call([(layout.server_rank(s), Save(str(folder / f"server-{s}.npz"))) for s in range(layout.nservers)])
    alg.allreduce(np.zeros(1))  # every file is written
    if worker == 0:
        write_manifest(folder, client.clock, alg.get_worker_size(), layout.nservers)
        prune(alg.output_dir)
    alg.allreduce(np.zeros(1))  # sealed
    return Checkpoint(folder, client.clock, alg.get_worker_size(), layout.nservers)


def restore(alg: "paralg", client: "ParamClient", saved: Checkpoint) -> None:
    """Collective of all workers, before ``solve()``: fill the (empty) servers with the saved
    table, routed by this job's ring (so the number of servers may differ), hand each worker
    its saved state (``load_state``) and continue the clocks from the checkpoint's.

    Raises ``ParacelError`` if the algorithm does not implement ``save_state`` (its progress
    is not in the checkpoint), or if the checkpoint holds worker state and the number of
    workers differs.
    """
    from paracel.paralg import paralg
    if type(alg).save_state is paralg.save_state:
        raise ParacelError(f"{type(alg).__name__} cannot be resumed: it does not implement save_state() and "
                           "load_state(), so its local state and progress are not in the checkpoint")
    workers, worker = alg.get_worker_size(), alg.get_worker_id()
    has_state = (saved.path / "worker-0.npz").exists()
    if has_state and saved.workers != workers:
        raise ParacelError(f"{saved.path}: written by {saved.workers} workers, each with its own state; "
                           f"resume it with {saved.workers} workers, not {workers}")
    for path in saved.server_files()[worker::workers]:
        for keys, values in load_shard(path):
            for start in range(0, len(keys), RESTORE_BATCH):
                part = np.arange(start, min(start + RESTORE_BATCH, len(keys)))
                client.write_batch(keys.take(part), values.take(part))
    alg.sync()
    client.start_at(saved.clock)
    if has_state:
        alg.load_state(load_worker_state(saved.path, worker))
