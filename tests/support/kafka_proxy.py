"""A TCP proxy between Kafka clients and a real broker that can make the group coordinator say
what the embedded dev broker never says: FENCED_INSTANCE_ID (82), which Apache Kafka answers a
static member whose `group.instance.id` another process has since joined with.

It forwards every byte both ways and, once `fence(api_key)` is called, sets the error code of
every later response to that api (Heartbeat 12, JoinGroup 11, SyncGroup 14, FindCoordinator 10)
to 82; `answer` sets another code (OffsetCommit 8: every partition's, as Kafka's
UNKNOWN_MEMBER_ID 25 to a replaced static member's commit) and can fence another api from then
on. Responses name no api, so each connection's requests are tracked by correlation id. It also
records the api key of every request it forwards (`requests_after_fence`): what a client sent
once fenced, and the topics of the Produce requests among them (`produced_after_fence`: the
test's own producer goes through the proxy too).

Clients find the brokers' addresses in Metadata and FindCoordinator responses, so the broker
must advertise the proxy's address (`ProxiedBroker`: a dev broker listening on one port and
advertising the proxy's): then every connection goes through the proxy and nothing needs
rewriting. The proxy runs its own event loop in a thread, so a test may block while it works.
"""

from __future__ import annotations

import asyncio
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from app.broker import DevBroker, free_port

FENCED_INSTANCE_ID, UNKNOWN_MEMBER_ID = 82, 25
PRODUCE, HEARTBEAT, JOIN_GROUP, SYNC_GROUP, OFFSET_COMMIT = 0, 12, 11, 14, 8
FIND_COORDINATOR = 10  # aiokafka's are v0 and v1: one coordinator, its error code first
# The first version of each api that is flexible (KIP-482): its response header then has a
# tagged-field section after the correlation id.
FLEXIBLE_FROM = {HEARTBEAT: 4, JOIN_GROUP: 6, SYNC_GROUP: 4, FIND_COORDINATOR: 3}
# The first version whose response starts with throttle_time_ms (int32), before the error code.
THROTTLE_FROM = {HEARTBEAT: 1, JOIN_GROUP: 2, SYNC_GROUP: 1, FIND_COORDINATOR: 1}


def _string(frame: bytes, at: int) -> tuple[str | None, int]:
    """A (nullable, non-compact) string at `at`, and where what follows it starts."""
    (n,) = struct.unpack_from(">h", frame, at)
    at += 2
    return (None, at) if n < 0 else (frame[at : at + n].decode(), at + n)


def produce_topics(frame: bytes) -> list[str]:
    """The topics a Produce request (a frame without its length prefix, up to version 8:
    not flexible) writes to."""
    api_key, api_version = struct.unpack_from(">hh", frame)
    if api_key != PRODUCE or api_version >= 9:
        raise ValueError(f"not a Produce request up to version 8: {api_key} v{api_version}")
    _, at = _string(frame, 8)  # the client id
    if api_version >= 3:
        _, at = _string(frame, at)  # the transactional id
    at += 2 + 4  # acks, timeout
    topics = []
    (count,) = struct.unpack_from(">i", frame, at)
    at += 4
    for _ in range(count):
        topic, at = _string(frame, at)
        topics.append(str(topic))
        (partitions,) = struct.unpack_from(">i", frame, at)
        at += 4
        for _ in range(partitions):
            (size,) = struct.unpack_from(">i", frame, at + 4)  # after the partition index
            at += 8 + max(size, 0)
    return topics


def error_code_offset(api_key: int, api_version: int) -> int:
    """Where the top-level error code starts in a response body (after its header)."""
    if api_key not in FLEXIBLE_FROM:
        raise ValueError(f"no error code rewriting for api {api_key}")
    return 4 if api_version >= THROTTLE_FROM[api_key] else 0


def with_error_code(response: bytes, api_key: int, api_version: int, code: int) -> bytes:
    """`response` (a frame without its length prefix) with its error code set to `code`."""
    at = 4  # the correlation id
    if api_version >= FLEXIBLE_FROM[api_key]:
        if response[at] != 0:  # no tagged fields: a one-byte zero count (a varint)
            raise ValueError("tagged fields in a response header")
        at += 1
    at += error_code_offset(api_key, api_version)
    return response[:at] + struct.pack(">h", code) + response[at + 2 :]


def with_commit_error(response: bytes, api_version: int, code: int) -> bytes:
    """An OffsetCommit `response` (up to version 7: not flexible) with every partition's error
    code set to `code`."""
    if api_version >= 8:
        raise ValueError(f"no error code rewriting for OffsetCommit v{api_version}")
    out = bytearray(response)
    at = 4 + (4 if api_version >= 3 else 0)  # the correlation id, throttle_time_ms
    (topics,) = struct.unpack_from(">i", out, at)
    at += 4
    for _ in range(topics):
        _, at = _string(response, at)
        (partitions,) = struct.unpack_from(">i", out, at)
        at += 4
        for _ in range(partitions):
            struct.pack_into(">h", out, at + 4, code)  # after the partition index
            at += 6
    return bytes(out)


@dataclass
class FaultProxy:
    """Forwards 127.0.0.1:`port` to `upstream` (host, port); see the module docstring."""

    upstream: tuple[str, int]
    port: int = field(default_factory=free_port)
    answers: dict[int, int] = field(default_factory=dict)  # api key -> the error code it gets
    then_fence: dict[int, int] = field(default_factory=dict)  # api key -> api fenced after it
    fenced_answers: int = 0  # responses rewritten so far
    requests_after_fence: list[int] = field(default_factory=list)  # api keys, in order
    topics_after_fence: list[str] = field(default_factory=list)  # of those that are Produce
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _server: asyncio.Server | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> FaultProxy:
        started = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def serve() -> None:
            self._server = await asyncio.start_server(self._connected, "127.0.0.1", self.port)
            started.set()

        def run() -> None:
            assert self._loop is not None
            self._loop.run_until_complete(serve())
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="kafka-fault-proxy", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("the proxy did not start")
        return self

    def stop(self) -> None:
        """Close the listener and every connection, then the proxy's loop."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        async def close() -> None:
            if self._server is not None:
                self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            loop.stop()

        asyncio.run_coroutine_threadsafe(close(), loop)
        thread.join(10)
        loop.close()
        self._loop = self._thread = None

    def fence(self, api_key: int) -> None:
        """From now on, answer every `api_key` request with FENCED_INSTANCE_ID."""
        self.answer(api_key, FENCED_INSTANCE_ID)

    def answer(self, api_key: int, error_code: int, and_fence: int | None = None) -> None:
        """From now on, answer every `api_key` request with `error_code` (OffsetCommit: every
        partition's); from the first such answer on, fence `and_fence` too."""
        if api_key != OFFSET_COMMIT:
            error_code_offset(api_key, 1)  # one it can rewrite
        with self._lock:
            self.answers[api_key] = error_code
            if and_fence is not None:
                self.then_fence[api_key] = and_fence

    def forward(self, api_key: int) -> None:
        """From now on, forward `api_key`'s answers as they are again."""
        with self._lock:
            self.answers.pop(api_key, None)

    def seen_after_fence(self) -> list[int]:
        with self._lock:
            return list(self.requests_after_fence)

    def produced_after_fence(self) -> list[str]:
        """The topics of the Produce requests forwarded since the first fenced answer."""
        with self._lock:
            return list(self.topics_after_fence)

    async def _connected(
        self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
    ) -> None:
        try:
            broker_r, broker_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_w.close()
            return
        apis: dict[int, tuple[int, int, list[str]]] = {}  # correlation id -> (api, version, topics)
        await asyncio.gather(
            self._pump(client_r, broker_w, lambda frame: self._request(frame, apis)),
            self._pump(broker_r, client_w, lambda frame: self._response(frame, apis)),
        )

    @staticmethod
    async def _pump(
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_frame: Callable[[bytes], bytes],
    ) -> None:
        try:
            while True:
                size = await reader.readexactly(4)
                frame = on_frame(await reader.readexactly(struct.unpack(">i", size)[0]))
                writer.write(struct.pack(">i", len(frame)) + frame)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def _request(self, frame: bytes, apis: dict[int, tuple[int, int, list[str]]]) -> bytes:
        api_key, api_version, correlation_id = struct.unpack(">hhi", frame[:8])
        topics = produce_topics(frame) if api_key == PRODUCE else []
        apis[correlation_id] = (api_key, api_version, topics)
        with self._lock:
            if self.fenced_answers:
                self.requests_after_fence.append(api_key)
                self.topics_after_fence.extend(topics)
        return frame

    def _response(self, frame: bytes, apis: dict[int, tuple[int, int, list[str]]]) -> bytes:
        (correlation_id,) = struct.unpack(">i", frame[:4])
        api_key, api_version, _ = apis.pop(correlation_id, (-1, -1, []))
        with self._lock:
            code = self.answers.get(api_key)
            if code is None:
                return frame
            self.fenced_answers += 1
            fenced = self.then_fence.pop(api_key, None)
            if fenced is not None:
                self.answers[fenced] = FENCED_INSTANCE_ID
        if api_key == OFFSET_COMMIT:
            return with_commit_error(frame, api_version, code)
        return with_error_code(frame, api_key, api_version, code)


@dataclass
class ProxiedBroker(DevBroker):
    """A dev broker that advertises `advertised_port` (a `FaultProxy`'s) instead of its own."""

    advertised_port: int = 0

    def command(self) -> list[str]:
        command = super().command()
        at = command.index("--advertised-listener-url") + 1
        command[at] = f"tcp://{self.host}:{self.advertised_port}"
        return command
