"""The server's key index (csrc/keyindex.pyx) against a Python dict, and the packing of str keys."""
from __future__ import annotations

import numpy as np
import pytest

from paracel._ext.keyindex import KeyIndex, decode_strs, encode_strs, gather_bytes

M64 = (1 << 64) - 1


def splitmix(keys: np.ndarray) -> np.ndarray:
    """The int table's hash (keyindex.pyx ``hash_int``), to pick keys that share a home entry."""
    with np.errstate(over="ignore"):
        x = keys.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def colliding_ints(n: int, bits: int = 12) -> np.ndarray:
    """``n`` int keys whose hashes agree in their low ``bits`` bits: one long probe run."""
    candidates = np.arange(1 << 22, dtype=np.int64) * 7919 - (1 << 40)
    hashes = splitmix(candidates) & np.uint64((1 << bits) - 1)
    same = candidates[hashes == hashes[0]]
    assert len(same) >= n
    return same[:n]


def pack(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    encoded = [s.encode() for s in names]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    return np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets


def unpack(blob: np.ndarray, offsets: np.ndarray) -> list[str]:
    data = blob.tobytes()
    return [data[a:b].decode() for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]


def check(index: KeyIndex, ints: dict[int, int], strs: dict[str, int], int_pool: np.ndarray,
          str_pool: list[str]) -> None:
    """Every key of both pools reads as in the model (-1 where absent); items list the model."""
    assert len(index) == len(ints) + len(strs)
    expected = np.array([ints.get(k, -1) for k in int_pool.tolist()], dtype=np.int64)
    np.testing.assert_array_equal(index.get_ints(int_pool), expected)
    expected = np.array([strs.get(k, -1) for k in str_pool], dtype=np.int64)
    np.testing.assert_array_equal(index.get_strs(*pack(str_pool)), expected)
    keys, slots = index.int_items()
    assert dict(zip(keys.tolist(), slots.tolist())) == ints and len(keys) == len(ints)
    blob, offsets, slots = index.str_items()
    names = unpack(blob, offsets)
    assert dict(zip(names, slots.tolist())) == strs and len(names) == len(strs)


STR_POOL = ["", "a", "b", "ab", "é", "日本語", "\x00", "a\x00", "Ωmega", "x" * 7, "x" * 8, "x" * 9, "y" * 16,
            "y" * 17, "z" * 33, "prefix-" + "q" * 40] + [f"w{i}" for i in range(300)] + [f"ключ-{i}" for i in range(50)]


@pytest.mark.parametrize("seed", range(6))
def test_random_operations_match_a_dict(seed: int) -> None:
    """Interleaved batches of set (with repeats: the last wins), get and delete (with absent keys),
    on pools small enough that keys are deleted and inserted again, in tables that stay small
    (probe runs wrap around the end) or grow through several doublings."""
    rng = np.random.default_rng(seed)
    int_pool = np.concatenate([np.array([0, -1, 1, -2**63, 2**63 - 1], dtype=np.int64), colliding_ints(60),
                               rng.integers(-2**63, 2**63 - 1, 300, dtype=np.int64, endpoint=True)])
    int_pool = np.unique(int_pool)
    index, ints, strs = KeyIndex(), {}, {}
    for step in range(400):
        size = int(rng.integers(1, 8 if step < 200 else 120))  # small tables first, then growth
        op = rng.integers(4)
        slots = rng.integers(0, 2**62, size)
        if op == 0:
            keys = rng.choice(int_pool, size)
            assert index.set_ints(keys, slots) == len(set(keys.tolist()) - ints.keys())
            ints.update(zip(keys.tolist(), slots.tolist()))
        elif op == 1:
            keys = rng.choice(int_pool, size)
            index.del_ints(keys)
            for k in keys.tolist():
                ints.pop(k, None)
        elif op == 2:
            names = [STR_POOL[i] for i in rng.integers(len(STR_POOL), size=size)]
            assert index.set_strs(*pack(names), slots) == len(set(names) - strs.keys())
            strs.update(zip(names, slots.tolist()))
        else:
            names = [STR_POOL[i] for i in rng.integers(len(STR_POOL), size=size)]
            index.del_strs(*pack(names))
            for k in names:
                strs.pop(k, None)
        if step % 20 == 0 or step > 380:
            check(index, ints, strs, int_pool, STR_POOL)


def test_colliding_ints_deleted_from_the_middle_of_their_run() -> None:
    """Keys sharing one home entry: deleting any of them keeps the others reachable."""
    keys = colliding_ints(200)
    index = KeyIndex()
    index.set_ints(keys, np.arange(200))
    first, second, left = (np.ascontiguousarray(keys[i::3]) for i in range(3))
    index.del_ints(first)
    index.del_ints(second)
    np.testing.assert_array_equal(index.get_ints(left), np.arange(200)[2::3])
    np.testing.assert_array_equal(index.get_ints(keys), np.where(np.arange(200) % 3 == 2, np.arange(200), -1))
    index.set_ints(first, np.arange(len(first)))  # in again
    np.testing.assert_array_equal(index.get_ints(first), np.arange(len(first)))
    assert len(index) == len(left) + len(first)


def test_growth_through_many_doublings_loses_no_key() -> None:
    rng = np.random.default_rng(7)
    ints = np.unique(rng.integers(-2**63, 2**63 - 1, 200_000, dtype=np.int64))
    names = [f"key-{i}-{'é' * (i % 5)}" for i in range(100_000)]
    index = KeyIndex()
    for part in np.array_split(np.arange(len(ints)), 37):  # batches of uneven sizes
        index.set_ints(ints[part], part)
    blob, offsets = pack(names)
    for part in np.array_split(np.arange(len(names)), 23):
        sub_blob, sub_offsets = gather_bytes(blob, offsets, part)
        index.set_strs(sub_blob, sub_offsets, part)
    np.testing.assert_array_equal(index.get_ints(ints), np.arange(len(ints)))
    np.testing.assert_array_equal(index.get_strs(blob, offsets), np.arange(len(names)))
    index.del_strs(*gather_bytes(blob, offsets, np.arange(0, len(names), 2)))  # compacts the arena
    expected = np.where(np.arange(len(names)) % 2 == 0, -1, np.arange(len(names)))
    np.testing.assert_array_equal(index.get_strs(blob, offsets), expected)
    assert len(index) == len(ints) + len(names) // 2


def test_str_items_by_prefix() -> None:
    index = KeyIndex()
    names = ["", "a", "ab", "abc", "b", "é", "éa", "a" * 20]
    index.set_strs(*pack(names), np.arange(len(names)))
    for prefix in ["", "a", "ab", "é", "zzz", "a" * 21]:
        blob, offsets, slots = index.str_items(prefix.encode())
        got = dict(zip(unpack(blob, offsets), slots.tolist()))
        assert got == {n: i for i, n in enumerate(names) if n.startswith(prefix)}
    blob, offsets, slots = KeyIndex().str_items()
    assert len(blob) == 0 and offsets.tolist() == [0] and len(slots) == 0


def test_refuses_negative_slots_and_mismatched_lengths() -> None:
    index = KeyIndex()
    with pytest.raises(ValueError, match="slot -1"):
        index.set_ints(np.array([5]), np.array([-1]))
    with pytest.raises(ValueError, match="2 keys but 1 slots"):
        index.set_strs(*pack(["a", "b"]), np.array([1]))
    assert len(index) == 0


def test_encode_and_decode_strs() -> None:
    names = ["", "a", "é", "日本語", "\x00x", "𝄞" * 3, "plain"]
    blob, offsets = encode_strs(names)
    expected_blob, expected_offsets = pack(names)
    np.testing.assert_array_equal(blob, expected_blob)
    np.testing.assert_array_equal(offsets, expected_offsets)
    assert decode_strs(blob, offsets) == names
    blob, offsets = encode_strs([])
    assert len(blob) == 0 and offsets.tolist() == [0] and decode_strs(blob, offsets) == []
    with pytest.raises(UnicodeEncodeError):
        encode_strs(["fine", "\ud800"])
    with pytest.raises(UnicodeDecodeError):
        decode_strs(np.frombuffer(b"\xff", dtype=np.uint8), np.array([0, 1]))
