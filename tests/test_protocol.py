"""The protocol: every request and reply survives encode -> frame -> decode, error replies
become the right exceptions, the server's and clock's handler tables serve it (no MPI), and a
worker asking for an unknown operation on real ranks gets a clear error, never a hang."""
from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pytest
from mpi4py import MPI

from paracel import JobFailed, ParacelError, RemoteKeyError, ServerError, launch
from paracel.batch import BATCH_FIELDS, INT_KEYS, STR_KEYS, KeyBatch, ValueBatch
from paracel.clock import ClockState
from paracel.protocol import (CLOCK_REQUESTS, FAILED, OP, PROTOCOL_FIELDS, SERVER_REQUESTS, Ack, Contains, Count,
                              Done, ErrorReply, Flush, Items, Mask, Pairs, Proceed, Pull, Push, Remove, Reply, Report,
                              Save, Sync, Tick, TopK, Update, Values)
from paracel.server import ServerState
from paracel.waiting import probe
from paracel.wire import PAYLOAD_SIZES, TAG_REPLY, TAG_REQUEST, PendingSend, Receiver

TIMEOUT = 60


def kb(keys):
    return KeyBatch.of(keys)


def vb(values):
    return ValueBatch.of(values, len(values))


REQUESTS = [
    Pull(kb([3, -1, 2**40])), Pull(kb(["a", "日本"])), Remove(kb(["gone"])), Contains(kb(np.arange(5))),
    Push(kb(["w"]), vb([np.arange(6.0).reshape(2, 3)])), Push(kb([1, 2]), vb([1, np.float32(2.5)])),
    Update(kb([7, 8]), vb(np.ones((2, 3), np.int16)), fn="max"),
    Update(kb(["x"]), vb([0.5]), fn="pkg.mod:fn", wait_applied=False),
    Items(INT_KEYS), Items(STR_KEYS, prefix="w:"), TopK(STR_KEYS, None, 4), TopK(STR_KEYS, "x", 2),
    Flush(), Save("/tmp/ckpt/shard-2.npz"), Done(), Tick(), Sync(), Tick({"wall": 1.5, "load": [[1, 2, 3, 4]], "staleness": {0: 3}}),
    Report(step=3, values={"loss": 0.5, "test_rmse": None}), Report(total=30),
]
REPLIES = [
    Ack(), Values(vb([np.zeros((2, 2)), 3])), Values(vb(np.arange(4.0))), Values(ValueBatch(ragged=[])),
    Count(2), Mask(np.array([True, False, True])), Pairs(kb(["a", "b"]), vb([1, 2])),
    Pairs(KeyBatch.empty(STR_KEYS), ValueBatch(ragged=[])), Proceed(12),
    ErrorReply(FAILED, "ValueError: no"),
]


def plain(x):
    """A comparable form of a request or reply: batches as typed lists, arrays as lists."""
    if isinstance(x, KeyBatch):
        return x.kind, x.to_list()
    if isinstance(x, ValueBatch):
        return [(type(v).__name__, np.asarray(v).dtype.str, np.shape(v), np.asarray(v).tolist()) for v in x.to_list()]
    if isinstance(x, np.ndarray):
        return x.dtype.str, x.tolist()
    if dataclasses.is_dataclass(x):
        return type(x).__name__, [plain(getattr(x, f.name)) for f in dataclasses.fields(x)]
    return x


def over_the_wire(message, tag=TAG_REQUEST):
    """Send a header and buffers to this very process through paracel's transport."""
    sending = PendingSend(MPI.COMM_SELF, 0, tag, *message)
    status = MPI.Status()
    probe(MPI.COMM_SELF, 0, tag, status)
    receiver = Receiver(MPI.COMM_SELF)
    header = receiver.header(status)
    payload = receiver.payload(0, header, reuse=False)
    assert sending.done()
    return header, payload


def test_samples_cover_every_operation_and_reply():
    assert {type(r) for r in REQUESTS} == set(SERVER_REQUESTS + CLOCK_REQUESTS)
    assert {type(r) for r in REPLIES} == set(Reply.__subclasses__())


def test_field_names_are_distinct_across_layers():
    assert not PROTOCOL_FIELDS & BATCH_FIELDS and PAYLOAD_SIZES not in PROTOCOL_FIELDS | BATCH_FIELDS


@pytest.mark.parametrize("request_", REQUESTS, ids=lambda r: type(r).__name__)
def test_every_request_roundtrips(request_):
    header, payload = over_the_wire(request_.encode())
    decoded = {cls.op: cls for cls in SERVER_REQUESTS + CLOCK_REQUESTS}[header[OP]].decode(header, payload)
    assert type(decoded) is type(request_) and plain(decoded) == plain(request_)
    assert decoded.awaits_reply == request_.awaits_reply


@pytest.mark.parametrize("reply", REPLIES, ids=lambda r: type(r).__name__)
def test_every_reply_roundtrips(reply):
    header, payload = over_the_wire(reply.encode(), TAG_REPLY)
    asked = next((r for r in REQUESTS if r.answer is type(reply)), Pull(kb([1])))  # any request may fail
    decoded = asked.read_reply(header, payload)
    assert type(decoded) is type(reply) and plain(decoded) == plain(reply)


@pytest.mark.parametrize("raised, expected, message", [
    (RemoteKeyError("no such key: 'a'"), RemoteKeyError, "no such key: 'a'"),
    (ParacelError("sync() cannot complete"), ParacelError, "clock rank 5: sync() cannot complete"),
    (ValueError("unknown update function 'f'"), ServerError, "clock rank 5: ValueError: unknown update function 'f'"),
])
def test_error_replies_raise_the_matching_exception(raised, expected, message):
    header, payload = over_the_wire(ErrorReply.of(raised).encode(), TAG_REPLY)
    error = Tick().read_reply(header, payload).exception("clock rank 5")
    assert type(error) is expected and str(error) == message


def handle(service, source, request):
    """Run ``request`` through ``service``'s handler table as the rank loop would."""
    header, buffers = request.encode()
    return service.handle(source, header, [np.frombuffer(np.ascontiguousarray(b).tobytes(), np.uint8)
                                           for b in buffers])


def test_handler_tables_serve_exactly_the_protocol():
    assert set(ServerState.operations) == {r.op for r in SERVER_REQUESTS}
    assert set(ClockState.operations) == {r.op for r in CLOCK_REQUESTS}
    read_only = {op for op, operation in ServerState.operations.items() if operation.read_only}
    assert read_only == {"pull", "contains", "items", "topk", "flush", "save"}
    assert not any(operation.read_only for operation in ClockState.operations.values())


def test_server_handlers():
    server = ServerState(nworkers=1)
    assert handle(server, 0, Push(kb(["a", "b", "c"]), vb([1.0, 5.0, 3.0]))) == [(0, Ack())]
    assert handle(server, 0, Update(kb(["a"]), vb([2.0]))) == [(0, Ack())]
    assert handle(server, 0, Update(kb([9]), vb([1.0]), fn="max")) == [(0, Ack())]  # an absent key stores the delta
    assert handle(server, 0, Update(kb(["a"]), vb([1.0]), wait_applied=False)) == []
    [(_, values)] = handle(server, 0, Pull(kb(["a", "b"])))
    assert values.values.to_list() == [4.0, 5.0]
    [(_, mask)] = handle(server, 0, Contains(kb(["a", "zz"])))
    assert mask.present.tolist() == [True, False]
    [(_, pairs)] = handle(server, 0, Items(INT_KEYS))
    assert pairs.keys.to_list() == [9] and pairs.values.to_list() == [1.0]
    [(_, top)] = handle(server, 0, TopK(STR_KEYS, None, 2))
    assert top.keys.to_list() == ["b", "a"]
    assert handle(server, 0, Remove(kb(["c", "c", "nope"]))) == [(0, Count(1))]
    assert handle(server, 0, Flush()) == [(0, Ack())]
    assert handle(server, 0, Done()) == [] and server.finished


def test_clock_handlers_release_several_workers_at_once():
    clock = ClockState(nworkers=3, staleness=0)
    assert handle(clock, 0, Tick()) == [] and handle(clock, 1, Tick()) == []
    assert handle(clock, 2, Tick()) == [(0, Proceed(1)), (1, Proceed(1)), (2, Proceed(1))]
    assert handle(clock, 0, Sync()) == [] and handle(clock, 1, Sync()) == []
    assert handle(clock, 2, Done()) == [(0, clock._sync_error()), (1, clock._sync_error())]


def test_clock_answers_an_unknown_operation_with_an_error():
    clock = ClockState(nworkers=1, staleness=0)
    [(dest, reply)] = clock.handle(0, {OP: "frobnicate"}, [])
    assert dest == 0 and reply == ErrorReply(FAILED, "ValueError: unknown clock operation 'frobnicate'")
    assert handle(clock, 0, Tick()) == [(0, Proceed(1))]  # and keeps serving
    [(_, reply)] = clock.handle(0, {OP: ["not", "an", "op"]}, [])
    assert reply.message == "ValueError: unknown clock operation None" and not clock.read_only({OP: ["x"]})
    with pytest.raises(ParacelError, match="'frobnicate' from rank 0, which waits for no reply, failed"):
        clock.handle(0, {OP: "frobnicate", "ack": False}, [])  # no one to tell: the rank fails


def run(tmp_path, mode):
    config = {"algorithm": "tests.protocol_jobs:AsksUnknown", "params": {"mode": mode}, "staleness": 0,
              "output": str(tmp_path / "out")}
    return launch(config, workers=2, servers=2, timeout=TIMEOUT)


def test_unknown_operations_on_real_ranks_raise_and_the_job_goes_on(tmp_path):
    run(tmp_path, "caught")
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["n"] == 6
    clock_rank, server_rank = 4, 2
    assert result["caught"] == {
        "clock": f"ServerError: clock rank {clock_rank}: ValueError: unknown clock operation 'frobnicate'",
        "server": f"ServerError: server rank {server_rank}: ValueError: unknown server operation 'frobnicate'",
    }


@pytest.mark.parametrize("mode, message", [
    ("uncaught", "clock rank 4: ValueError: unknown clock operation 'frobnicate'"),
    ("unawaited", "'frobnicate' from rank 0, which waits for no reply, failed: ValueError: unknown clock operation"),
])
def test_an_unknown_operation_left_unhandled_ends_the_job(tmp_path, mode, message):
    start = time.monotonic()
    with pytest.raises(JobFailed) as info:
        run(tmp_path, mode)
    assert time.monotonic() - start < 30 and info.value.returncode != 0
    assert message in info.value.output


def test_a_value_received_into_its_row_is_not_copied_again():
    server = ServerState(nworkers=1)
    handle(server, 0, Push(kb(["big"]), vb([np.zeros(1000)])))
    header, buffers = Push(kb(["big"]), vb([np.arange(1000.0)])).encode()
    received = [np.ascontiguousarray(b).reshape(-1).view(np.uint8) for b in buffers]
    *keys, value = received  # str keys travel in two buffers
    row = server.landing(header)(len(keys), keys)
    row[:] = value
    server.table.blocks[0].data.flags.writeable = False  # a second copy into the table would raise
    assert server.handle(0, header, [*keys, row]) == [(0, Ack())]
    assert server.table.read(kb(["big"])).to_list()[0].tolist() == list(range(1000))
