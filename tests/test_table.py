"""The server's table and request handlers, driven directly (no MPI)."""
from __future__ import annotations

import numpy as np
import pytest

from paracel.batch import KeyBatch, ValueBatch
from paracel.clock import ClockState
from paracel.errors import RemoteKeyError
from paracel.protocol import (FAILED, MISSING_KEYS, OP, Ack, Done, ErrorReply, Flush, Proceed, Pull, Push, Sync, Tick,
                              Update)
from paracel.server import ServerState
from paracel.table import ShardTable
from paracel.updates import resolve


def kb(keys):
    return KeyBatch.of(keys)


def vb(values, n=None):
    return ValueBatch.of(values, len(values) if n is None else n)


def test_write_read_overwrite_and_signature_change():
    t = ShardTable()
    t.write(kb(["a", "b"]), vb([np.arange(3.0), np.arange(3.0) + 1]))
    t.write(kb(["a"]), vb([np.ones((2, 2), np.int8)]))  # a moves to another block
    a, b = t.read(kb(["a", "b"])).to_list()
    assert a.dtype == np.int8 and a.shape == (2, 2) and np.array_equal(b, [1.0, 2.0, 3.0])
    t.write(kb(np.arange(1000)), vb(np.ones((1000, 4))))  # grows a block many times
    assert len(t) == 1002 and t.read(kb([999])).dense.shape == (1, 4)


def test_read_names_missing_keys():
    t = ShardTable()
    t.write(kb([1]), vb([1.0]))
    with pytest.raises(RemoteKeyError, match="no such keys: 2, 3"):
        t.read(kb([1, 2, 3]))


@pytest.mark.parametrize("keys", [[4, 4, 9], ["d", "d", "n"]])
def test_write_of_a_repeated_key_keeps_the_last_value_and_frees_the_other_row(keys):
    t = ShardTable()
    slots = t.write(kb(keys), vb(np.array([[1.0], [2.0], [3.0]])))
    assert np.array_equal(t.read(kb(keys[1:])).dense, [[2.0], [3.0]])
    assert slots.tolist() == t.lookup(kb(keys)).tolist() and slots[0] == slots[1]
    block = t.blocks[0]
    assert block.size - len(block.free) == 2


@pytest.mark.parametrize("fn, expected", [("add", 13.0), ("sub", 7.0), ("mul", 30.0), ("max", 10.0),
                                          ("min", 3.0), ("replace", 3.0)])
def test_builtin_update_functions(fn, expected):
    t = ShardTable()
    t.write(kb(["x"]), vb([10.0]))
    t.update(kb(["x"]), vb([3.0]), fn)
    assert t.read(kb(["x"])).to_list() == [expected]


def test_update_of_absent_key_stores_delta_and_repeats_accumulate():
    t = ShardTable()
    t.update(kb([5, 5, 6, 5]), vb(np.ones((4, 2))), "add")  # 5 is new and repeated in one batch
    assert np.array_equal(t.read(kb([5, 6])).dense, [[3, 3], [1, 1]])
    t.update(kb([5, 5]), vb(np.ones((2, 2))), "add")
    assert np.array_equal(t.read(kb([5])).dense, [[5, 5]])


def test_builtin_updates_keep_the_stored_dtype_shape_and_type():
    t = ShardTable()
    t.write(kb(["n", "f"]), vb([2, 1.5]))  # Python numbers: int64 and float64
    t.write(kb(["a"]), vb([np.zeros(3, np.int32)]))
    t.write(kb(["h"]), vb([np.ones(2, np.float32)]))
    t.update(kb(["n", "f"]), vb(np.array([3, 2])), "add")  # numpy int deltas (a new block) onto both
    t.update(kb(["a", "a"]), vb(np.ones((2, 3), np.int64)), "add")  # int64 onto int32, repeated key
    t.update(kb(["h"]), vb([np.full(2, 0.5)]), "mul")  # float64 onto float32
    n, f, a, h = t.read(kb(["n", "f", "a", "h"])).to_list()
    assert (n, type(n), f, type(f)) == (5, int, 3.5, float)
    assert a.dtype == np.int32 and a.tolist() == [2, 2, 2]
    assert h.dtype == np.float32 and h.tolist() == [0.5, 0.5]


@pytest.mark.parametrize("key, delta, error, message", [
    ("n", 0.5, TypeError, "update 'add' of key 'n': a float64 delta cannot change the stored int64 value"),
    ("a", np.ones(3), TypeError, "key 'a': a float64 delta cannot change the stored int32 value"),
    ("f", 1j, TypeError, "key 'f': a complex128 delta cannot change the stored float64 value"),
    ("a", np.ones(4, np.int32), ValueError, "key 'a': a delta of shape (4,) cannot change the stored value's shape"),
    ("a", 1, ValueError, "key 'a': a delta of shape () cannot change the stored value's shape (3,)"),
])
def test_builtin_updates_refuse_a_dtype_or_shape_change_and_change_nothing(key, delta, error, message):
    t = ShardTable()
    t.write(kb(["n", "f", "a"]), vb([2, 1.5, np.arange(3, dtype=np.int32)]))
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        t.update(kb(["new", key]), vb([1, delta]), "add")
    n, f, a = t.read(kb(["n", "f", "a"])).to_list()
    assert (n, f, a.tolist()) == (2, 1.5, [0, 1, 2]) and not t.contains(kb(["new"]))[0]
    t.update(kb([key]), vb([delta]), "replace")  # replace stores the delta as given, like a write
    assert np.asarray(t.read(kb([key])).to_list()[0]).dtype == np.asarray(delta).dtype


def test_remove_contains_items_topk():
    t = ShardTable()
    t.write(kb(["w:a", "w:b", "v:c"]), vb([3, 9, 100]))
    t.write(kb([7]), vb([np.zeros(2)]))
    assert t.contains(kb(["w:a", "zz", "7"])).tolist() == [True, False, False]  # str "7" is not int 7
    assert t.contains(kb([7])).tolist() == [True]
    keys, values = t.items("s", "w:")
    assert dict(zip(keys.to_list(), values.to_list())) == {"w:a": 3, "w:b": 9}
    keys, values = t.topk(2, "s")
    assert keys.to_list() == ["v:c", "w:b"]
    assert t.remove(kb(["w:a", "w:a", "nope"])) == 1
    assert t.contains(kb(["w:a"])).tolist() == [False]
    t.write(kb(["w:a"]), vb([4]))  # the freed row is reused
    assert t.read(kb(["w:a", "w:b"])).to_list() == [4, 9]


@pytest.mark.parametrize("mixed", [False, True])  # one block of int scalars (dense), or several
@pytest.mark.parametrize("k", [0, 1, 5, 40, 500])
def test_topk_equals_a_sort_of_every_value_ties_by_key(k, mixed):
    rng = np.random.default_rng(k)
    names = [f"w{i}" for i in range(300)]
    counts = rng.integers(0, 20, len(names))  # many ties, also at the k-th value
    t = ShardTable()
    t.write(kb(names), vb(counts))
    expected = list(zip(names, counts.tolist()))
    if mixed:
        t.write(kb(["float"]), vb([np.float32(7.5)]))
        t.write(kb(["row"]), vb([np.arange(3.0)]))  # not a scalar: never chosen
        expected.append(("float", 7.5))
    want = sorted(expected, key=lambda kv: (-kv[1], kv[0]))[:k]
    keys, values = t.topk(k, "s")
    assert list(zip(keys.to_list(), values.to_list())) == want


def test_user_update_function_and_unknown_names():
    assert resolve("tests.jobs:capped_add")(8, 5) == 10
    with pytest.raises(ValueError, match="unknown update function 'nope'"):
        resolve("nope")
    with pytest.raises(ValueError, match="cannot import update function 'no.such:fn'"):
        resolve("no.such:fn")


def wire(request):
    """A request's header and buffers as the server loop receives them (bytes, not views)."""
    header, buffers = request.encode()
    return header, [np.frombuffer(np.ascontiguousarray(b).tobytes(), np.uint8) for b in buffers]


def answer(state, source, request):
    """The one reply ``state`` sends back to ``source`` for ``request``."""
    [(dest, reply)] = state.handle(source, *wire(request))
    assert dest == source
    return reply


def test_handlers_reply_errors_and_defer_batched_ones():
    state = ServerState(nworkers=2)
    assert answer(state, 0, Push(kb(["k"]), vb([1.0]))) == Ack()
    reply = answer(state, 0, Pull(kb(["absent"])))
    assert isinstance(reply, ErrorReply) and reply.kind == MISSING_KEYS and "'absent'" in reply.message
    reply = answer(state, 0, Update(kb(["k"]), vb([1.0]), fn="bogus"))
    assert reply.kind == FAILED and "unknown update function 'bogus'" in reply.message
    assert state.handle(1, *wire(Update(kb(["k"]), vb([1.0]), fn="bogus", wait_applied=False))) == []
    assert answer(state, 0, Flush()) == Ack()  # worker 0 has nothing deferred
    reply = answer(state, 1, Flush())
    assert isinstance(reply, ErrorReply) and "batched update" in reply.message
    reply = answer(state, 0, Pull(kb(["k"])))
    assert reply.values.to_list() == [1.0]
    [(_, reply)] = state.handle(0, {OP: "frobnicate"}, [])
    assert reply.message.startswith("ValueError: unknown server operation")


def test_clock_releases_within_the_bound():
    clock = ClockState(nworkers=2, staleness=1)
    assert clock.tick(0, Tick()) == [(0, Proceed(0))]  # clock 1, slowest 0: within s=1
    assert clock.tick(0, Tick()) == []  # clock 2 would be 2 ahead: waits
    assert clock.tick(1, Tick()) == [(0, Proceed(1)), (1, Proceed(1))]
    assert clock.finish(1, Done()) == []
    assert clock.tick(0, Tick()) == [(0, Proceed(3))]  # a finished worker holds nobody back
    bsp, asp = ClockState(2, 0), ClockState(2, None)
    barrier = ClockState(2, 0)
    assert barrier.sync(1, Sync()) == [] and barrier.sync(0, Sync()) == [(0, Proceed(0)), (1, Proceed(0))]
    assert barrier.sync(0, Sync()) == []
    assert isinstance(barrier.finish(1, Done())[0][1], ErrorReply)  # 0 waits in sync() when 1 leaves
    assert "already returned" in barrier.sync(0, Sync())[0][1].message
    assert bsp.tick(0, Tick()) == [] and len(asp.tick(0, Tick())) == 1


def receive(state, header, buffers):
    """Deliver a request the way the server loop does, landing buffers where it asks; returns
    the replies and whether a buffer landed where the server asked."""
    landing = state.landing(header)
    received, landed = [], False
    for i, buf in enumerate(buffers):
        target = landing(i, received) if landing else None
        if target is not None:
            assert target.nbytes == buf.nbytes
            target[:] = buf
            buf, landed = target, True
        received.append(buf)
    return state.handle(0, header, received), landed


def test_one_key_push_lands_in_the_table_row():
    state = ServerState(nworkers=1)
    for key in ("big", 42):
        receive(state, *wire(Push(kb([key]), vb([np.zeros(1000)]))))
        replies, landed = receive(state, *wire(Push(kb([key]), vb([np.arange(1000.0)]))))
        assert replies == [(0, Ack())] and landed
        assert np.array_equal(state.table.read(kb([key])).to_list()[0], np.arange(1000.0))
        _, landed = receive(state, *wire(Push(kb([key]), vb([np.ones(3, np.int32)]))))  # new signature
        assert not landed
        assert state.table.read(kb([key])).to_list()[0].tolist() == [1, 1, 1]
    receive(state, *wire(Push(kb(["scalar"]), vb([1.0]))))
    _, landed = receive(state, *wire(Push(kb(["scalar"]), vb([5.0]))))
    assert landed and state.table.read(kb(["scalar"])).to_list() == [5.0]


def test_lists_of_python_numbers_are_one_array_and_come_back_as_python_numbers():
    ints, floats = ValueBatch.of([3, -1, 7], 3), ValueBatch.of([0.5, 2.0], 2)
    assert ints.dense.dtype == np.int64 and floats.dense.dtype == np.float64
    assert ints.to_list() == [3, -1, 7] and all(type(v) is int for v in ints.to_list())
    assert floats.to_list() == [0.5, 2.0] and all(type(v) is float for v in floats.to_list())
    huge = ValueBatch.of([1, 2**63], 2)  # beyond int64: value by value, as ever
    assert huge.to_list() == [1, 2**63]
    scalars = ValueBatch.of(np.array([4, 5], dtype=np.int32), 2).to_list()
    assert scalars == [4, 5] and all(type(v) is np.int32 for v in scalars)
