"""The wire format: every key and value type survives encode -> bytes -> decode."""
from __future__ import annotations

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mpi4py import MPI

from paracel.batch import BATCH_FIELDS, COUNT, INT_KEYS, STR_KEYS, KeyBatch, ValueBatch
from paracel.errors import MessageError
from paracel.protocol import PROTOCOL_FIELDS, Contains, Done, Flush, Items, Pull, Push, Remove, Reply, TopK, Update
from paracel.server import ServerState
from paracel.wire import PAYLOAD_SIZES, Receiver, Sends, frame, receiver_driven, unpack_header
from tests.mpirun import run_ranks


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
    with pytest.raises(TypeError, match="all int or all str in one call; got int 1 and str 'a'"):
        KeyBatch.of(["a", 1])
    with pytest.raises(TypeError, match="key arrays must hold integers, not float64"):
        KeyBatch.of(np.array([1.5]))


@pytest.mark.parametrize("keys, error, message", [
    ([1.5], TypeError, "key 1.5 is a float: keys are int (64-bit) or str"),
    (1.5, TypeError, "key 1.5 is a float"),
    ([3, True], TypeError, "key True is a bool"),
    ([np.True_], TypeError, "key np.True_ is a bool"),
    ([np.float64(2.0)], TypeError, "key np.float64(2.0) is a float64"),
    ([None], TypeError, "key None is a NoneType"),
    (b"ab", TypeError, "key b'ab' is a bytes"),
    ([(1, 2)], TypeError, "key (1, 2) is a tuple"),
    ([2**70], ValueError, f"int key {2**70} is out of the 64-bit range"),
    ([-2**63 - 1], ValueError, f"int key {-2**63 - 1} is out of the 64-bit range"),
    (np.array([2**64 - 1], np.uint64), ValueError, f"int key {2**64 - 1} is out of the 64-bit range"),
    (np.array([True]), TypeError, "key arrays must hold integers, not bool"),
    (["ok", "\ud800"], ValueError, "str key '\\ud800' cannot be encoded as UTF-8"),
])
def test_keys_of_other_types_or_out_of_range_are_refused_by_name(keys, error, message):
    with pytest.raises(error) as info:
        KeyBatch.of(keys)
    assert message in str(info.value)


def test_int_keys_cover_the_int64_range_from_python_and_numpy_ints():
    keys = [-2**63, 2**63 - 1, np.int8(-3), np.uint32(7), 0]
    assert roundtrip_keys(keys) == [-2**63, 2**63 - 1, -3, 7, 0]
    assert roundtrip_keys(np.array([2**63 - 1], np.uint64)) == [2**63 - 1]
    assert roundtrip_keys(5) == [5] and roundtrip_keys("five") == ["five"]


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


# ---------------------------------------------------------------------------- malformed messages
FIELDS = sorted(PROTOCOL_FIELDS | BATCH_FIELDS | {PAYLOAD_SIZES})
ATOMS = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.integers(0, 3), st.floats(),
                  st.text(max_size=6),
                  st.sampled_from(["<f8", "|u1", "<i4", "|O", "|V0", "<U0", "<U2", "|b1", "<M8[s]", INT_KEYS, STR_KEYS,
                                   "pull", "push", "update", "items", "topk", "add", "replace"]))
ANY = st.recursive(ATOMS, lambda inner: st.lists(inner, max_size=4), max_leaves=8)
BUFFERS = st.lists(st.binary(max_size=80).map(lambda b: np.frombuffer(b, np.uint8).copy()), max_size=4)
SAMPLES = [
    Pull(KeyBatch.of([3, -1])), Pull(KeyBatch.of(["a", "日本"])), Remove(KeyBatch.of(["a"])),
    Contains(KeyBatch.of(np.arange(3))), Push(KeyBatch.of(["w"]), ValueBatch.of([np.arange(6.0)], 1)),
    Push(KeyBatch.of([1, 2]), ValueBatch.of([1, np.float32(2.5)], 2)),
    Update(KeyBatch.of([7, 8]), ValueBatch.of(np.ones((2, 3), np.int16), 2), fn="max"),
    Update(KeyBatch.of(["x"]), ValueBatch.of([0.5], 1), wait_applied=False), Items(STR_KEYS, "w"),
    TopK(INT_KEYS, None, 2), Flush(), Done(),
]


def _bytes(*arrays):
    return [np.ascontiguousarray(a).reshape(-1).view(np.uint8) for a in arrays]


@pytest.mark.parametrize("header, buffers, message", [
    ({"kk": "i", "n": 2}, _bytes(np.arange(3)), "int keys: a buffer of 24 bytes where 16 are due"),
    ({"kk": "s", "n": 1}, _bytes(np.zeros(4, np.uint8), np.array([0, 9])), "offsets do not split the 4 key bytes"),
    ({"kk": "s", "n": 2}, _bytes(np.zeros(4, np.uint8), np.array([0, 3, 2])), "offsets do not split"),
    ({"kk": "x", "n": 0}, [], "no key batch: kind 'x'"),
    ({"kk": "i", "n": -1}, _bytes(np.arange(1)), "count must be an int >= 0, got -1"),
    ({"vd": "|O", "vs": [], "vp": 0}, _bytes(np.zeros(1)), "values cannot have dtype object"),
    ({"vd": "|V0", "vs": [], "vp": 0}, [np.zeros(0, np.uint8)], "values cannot have dtype |V0"),
    ({"vd": "<f8", "vs": [2**40, 2**40], "vp": 0}, _bytes(np.zeros(1)), "a buffer of 8 bytes where"),
    ({"vd": "<f8", "vs": [], "vp": 7}, _bytes(np.zeros(1)), "unknown value type 7"),
    ({"vl": [["<f8", [2], 0]]}, _bytes(np.zeros(1)), "1 values: a buffer of 8 bytes where 16 are due"),
    ({"vl": []}, _bytes(np.zeros(1)), "no description of 1 values"),
])
def test_malformed_batches_are_refused_by_what_is_wrong(header, buffers, message):
    with pytest.raises(MessageError) as info:
        if "kk" in header:
            KeyBatch.from_wire(header, buffers)
        else:
            ValueBatch.from_wire(header, buffers, 1)
    assert message in str(info.value)


def _wire(buffers):
    return [np.frombuffer(np.ascontiguousarray(b).tobytes(), np.uint8).copy() for b in buffers]


def _serve(server, header, buffers):
    """A server handling a message must answer it (or keep its error for a flush), never raise."""
    for dest, reply in server.handle(0, header, buffers):
        assert dest == 0 and isinstance(reply, Reply)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_are_no_header_or_a_checked_one(data):
    try:
        header = unpack_header(data)
    except MessageError:
        return
    assert isinstance(header, dict) and all(type(n) is int and n >= 0 for n in header[PAYLOAD_SIZES])


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(SAMPLES), st.data())
def test_truncated_headers_are_refused(request_, data):
    header, buffers = request_.encode()
    packed, _ = frame(header, buffers)
    cut = data.draw(st.integers(0, len(packed) - 1))
    with pytest.raises(MessageError):
        unpack_header(packed[:cut])


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS), ANY, max_size=8), BUFFERS)
def test_random_headers_and_buffers_get_error_replies(header, buffers):
    _serve(ServerState(nworkers=1), header, buffers)
    for decode in (lambda: KeyBatch.from_wire(header, buffers)[0].hashes(),
                   lambda: ValueBatch.from_wire(header, buffers, header.get(COUNT, 1)).to_list()):
        try:
            decode()  # a batch, or MessageError: nothing else
        except MessageError:
            pass


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(SAMPLES), st.data())
def test_damaged_requests_get_error_replies_and_the_server_goes_on(request_, data):
    server = ServerState(nworkers=1)
    server.table.write(KeyBatch.of([1, 3, 7]), ValueBatch.of(np.ones(3), 3))
    server.table.write(KeyBatch.of(["a", "x", "w"]), ValueBatch.of(np.ones(3), 3))
    header, buffers = request_.encode()
    buffers = _wire(buffers)
    damage = data.draw(st.sampled_from(["field", "drop", "resize", "lose"]))
    if damage == "field":
        header[data.draw(st.sampled_from(FIELDS))] = data.draw(ANY)
    elif damage == "drop" and header:
        del header[data.draw(st.sampled_from(sorted(header)))]
    elif buffers:
        i = data.draw(st.integers(0, len(buffers) - 1))
        if damage == "lose":
            del buffers[i]
        else:
            buffers[i] = np.resize(buffers[i], data.draw(st.integers(0, 2 * len(buffers[i]) + 9)))
    _serve(server, header, buffers)
    _serve(server, *Push(KeyBatch.of(["after"]), ValueBatch.of([2.0], 1)).encode())
    assert server.table.read(KeyBatch.of(["after"])).to_list() == [2.0]


def test_sends_are_kept_until_mpi_is_done_with_them():
    sends = Sends()
    big = np.arange(200_000.0)  # too large for MPI to take before it is received
    sending = sends.post(MPI.COMM_SELF, 0, 55, {"k": 1}, [big])
    assert len(sends) == 1 and not sending.done()
    assert sends.nbytes() == sending.nbytes == len(msgpack.packb({"k": 1, PAYLOAD_SIZES: [big.nbytes]})) + big.nbytes
    receiver, status = Receiver(MPI.COMM_SELF), MPI.Status()
    assert MPI.COMM_SELF.Iprobe(0, 55, status)
    header = receiver.header(status)
    np.testing.assert_array_equal(receiver.payload(0, header, reuse=True)[0].view(np.float64), big)
    sends.wait(5)
    assert len(sends) == 0 and sends.nbytes() == 0


def test_sends_wait_for_their_sender_without_cma_or_on_several_nodes():
    """Without CMA single copy, or with ranks on several nodes, a large message needs its sender's
    calls: ``receiver_driven`` says so (batched updates then return once the server took them)."""
    check = "from mpi4py import MPI; from paracel.wire import receiver_driven; print(receiver_driven(MPI.COMM_WORLD))"
    cma_off = run_ranks(1, ["-c", check], timeout=60, env={"MPIR_CVAR_CH4_CMA_ENABLE": "0"})
    several_nodes = run_ranks(2, ["-c", "import os; os.environ['MPI_LOCALNRANKS'] = '1'; " + check], timeout=60)
    for done, nranks in [(cma_off, 1), (several_nodes, 2)]:
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["False"] * nranks
    assert not receiver_driven(MPI.COMM_SELF)  # not started by hydra: cannot be told
