"""Checkpoint files (paracel/checkpoint.py) without MPI: shards, worker state, manifests."""
from __future__ import annotations

import numpy as np
import pytest

from paracel import checkpoint
from paracel.batch import KeyBatch, ValueBatch
from paracel.errors import ParacelError
from paracel.table import ShardTable


def table_contents(table: ShardTable) -> dict:
    out = {}
    for kind in ("i", "s"):
        keys, values = table.items(kind)
        for key, value in zip(keys.to_list(), values.to_list()):
            out[key] = value
    return out


def test_a_shard_round_trips_every_key_dtype_and_type(tmp_path):
    table = ShardTable()
    table.write(KeyBatch.of(np.arange(1000)), ValueBatch(dense=np.random.default_rng(0).normal(size=(1000, 3))))
    table.write(KeyBatch.of(["a", "bé", "c"]), ValueBatch.of([1, 2, 3], 3))
    table.write(KeyBatch.of([5000, 5001]), ValueBatch.of([np.int32(7), np.int32(-1)], 2))
    table.write(KeyBatch.of(["m"]), ValueBatch.of([np.ones((2, 2), np.float32)], 1))
    table.write(KeyBatch.of([3]), ValueBatch.of([2.5], 1))  # key 3 moves to another block
    table.remove(KeyBatch.of([4]))
    table.remove(KeyBatch.of(["c"]))
    path = tmp_path / "server-0.npz"
    checkpoint.save_shard(table, path)
    restored = ShardTable()
    for keys, values in checkpoint.load_shard(path):
        restored.write(keys, values)
    before, after = table_contents(table), table_contents(restored)
    assert before.keys() == after.keys() and len(after) == 1000 - 1 + 2 + 2 + 1
    for key, value in before.items():
        assert type(after[key]) is type(value)
        np.testing.assert_array_equal(after[key], value)
        assert np.asarray(after[key]).dtype == np.asarray(value).dtype
    assert after[3] == 2.5 and after["bé"] == 2


def test_worker_state_keeps_arrays_and_plain_data(tmp_path):
    rng = np.random.default_rng(3)
    state = {"factors": rng.normal(size=(4, 2)), "round": 7, "rng": rng.bit_generator.state, "name": "mf"}
    checkpoint.save_worker_state(tmp_path, 1, state)
    back = checkpoint.load_worker_state(tmp_path, 1)
    np.testing.assert_array_equal(back["factors"], state["factors"])
    assert back["round"] == 7 and back["name"] == "mf" and back["rng"] == state["rng"]
    with pytest.raises(TypeError, match="'bad'"):
        checkpoint.save_worker_state(tmp_path, 2, {"bad": object()})


def seal(output, clock, workers=1, servers=1):
    folder = checkpoint.folder_for(output, clock)
    folder.mkdir(parents=True)
    checkpoint.save_shard(ShardTable(), folder / "server-0.npz")
    return checkpoint.write_manifest(folder, clock, workers, servers)


def test_newest_complete_checkpoint_wins_and_old_ones_go(tmp_path):
    with pytest.raises(ParacelError, match="no complete checkpoint"):
        checkpoint.newest(tmp_path)
    for clock in (2, 4, 6, 8):
        seal(tmp_path, clock)
    torn = checkpoint.folder_for(tmp_path, 10)  # a crash before its manifest
    torn.mkdir()
    (torn / "server-0.npz").write_bytes(b"partial")
    assert checkpoint.newest(tmp_path).clock == 8
    damaged = checkpoint.folder_for(tmp_path, 8) / "server-0.npz"
    damaged.write_bytes(damaged.read_bytes()[:-10])  # changed after sealing: not complete
    assert checkpoint.newest(tmp_path).clock == 6
    checkpoint.prune(tmp_path)  # keeps the newest two complete ones, and anything newer
    left = sorted(p.name for p in (tmp_path / checkpoint.FOLDER).iterdir())
    assert left == ["clock-00000004", "clock-00000006", "clock-00000008", "clock-00000010"]


def test_a_failed_write_leaves_the_previous_file_whole(tmp_path):
    path = tmp_path / "f.bin"
    checkpoint.atomic_write(path, lambda out: out.write(b"old"))

    def crash(out):
        out.write(b"new but")
        raise OSError("disk gone")
    with pytest.raises(OSError):
        checkpoint.atomic_write(path, crash)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f.bin"]
