"""The wire format: every key and value type survives encode -> bytes -> decode."""
from __future__ import annotations

import msgpack
import numpy as np
import pytest

from paracel.batch import KeyBatch, ValueBatch


def roundtrip_keys(keys):
    batch = KeyBatch.of(keys)
    header = msgpack.unpackb(msgpack.packb(batch.header()))
    wire = [np.frombuffer(b.tobytes(), np.uint8).copy() for b in batch.buffers()]
    decoded, rest = KeyBatch.from_wire(header, wire)
    assert rest == []
    return decoded.to_list()


def roundtrip_values(values, n):
    batch = ValueBatch.of(values, n)
    header = msgpack.unpackb(msgpack.packb(batch.header()))
    wire = [np.frombuffer(np.ascontiguousarray(b).tobytes(), np.uint8).copy() for b in batch.buffers()]
    return ValueBatch.from_wire(header, wire, n).to_list()


@pytest.mark.parametrize("keys", [
    [0, 1, -5, 2**62], ["a", "b", ""], ["héllo", "日本語", "emoji 🎉", "a\tb\nc"], np.arange(10, dtype=np.int32),
])
def test_keys_roundtrip(keys):
    assert roundtrip_keys(keys) == list(np.asarray(keys).tolist() if isinstance(keys, np.ndarray) else keys)


def test_keys_reject_mixed_and_bad_types():
    with pytest.raises(TypeError, match="all int or all str"):
        KeyBatch.of([1, "a"])
    with pytest.raises(TypeError):
        KeyBatch.of(np.array([1.5]))


def test_take_reorders_string_keys():
    batch = KeyBatch.of(["zero", "one", "two", "three"])
    assert batch.take(np.array([3, 0, 2])).to_list() == ["three", "zero", "two"]


VALUES = [
    1, -7, 2**40, 3.5, True, 1 + 2j,
    np.float32(2.5), np.int8(-3), np.uint64(2**63), np.bool_(False), np.float16(0.5),
    np.array(4.0), np.zeros(0), np.zeros((0, 3), np.int16), np.arange(12, dtype=np.int64).reshape(3, 4),
    np.array([1, 2], dtype=">i4"), np.linspace(0, 1, 7, dtype=np.float32), np.array([b"ab", b"c"]),
    np.zeros(3, dtype=[("x", "<f8"), ("n", "<i4")]),
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: f"{type(v).__name__}-{getattr(v, 'dtype', '')}")
def test_each_value_roundtrips_with_type_dtype_and_shape(value):
    (back,) = roundtrip_values([value], 1)
    assert type(back) is type(value)
    if isinstance(value, (np.ndarray, np.generic)):
        assert back.dtype == value.dtype and np.shape(back) == np.shape(value)
        assert np.array_equal(back, value)
    else:
        assert back == value


def test_mixed_values_travel_ragged_and_keep_order():
    values = [np.ones((2, 2)), 3, np.float32(1.5), np.arange(5)]
    back = roundtrip_values(values, 4)
    assert [type(v) for v in back] == [np.ndarray, int, np.float32, np.ndarray]
    assert np.array_equal(back[3], np.arange(5)) and back[1] == 3


def test_dense_rows_of_an_array():
    rows = np.random.default_rng(0).normal(size=(100, 10))
    back = roundtrip_values(rows, 100)
    assert np.array_equal(np.stack(back), rows)
    scalars = roundtrip_values(np.arange(5.0), 5)
    assert [type(v) for v in scalars] == [np.float64] * 5


def test_bad_values_are_rejected():
    with pytest.raises(TypeError, match="numbers or numpy arrays"):
        ValueBatch.of(["text"], 1)
    with pytest.raises(TypeError, match="object arrays"):
        ValueBatch.of([np.array([None])], 1)
    with pytest.raises(ValueError, match="3 keys but 2 values"):
        ValueBatch.of([1, 2], 3)
