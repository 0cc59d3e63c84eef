"""The tiered cache's invalidation channel: one listener per process, and the broadcast side.

Every process subscribes to ``<key prefix>invalidate`` and to a reply channel of its own. An
invalidation is a PUBLISH of ``{"id", "key", "reply"}`` (``key`` null = flush everything);
each subscriber evicts from its L1 and then acknowledges with a PUBLISH of ``{"id", "by"}`` on the
publisher's reply channel. PUBLISH returns how many subscribers received the message, so the
publisher knows how many acknowledgements to wait for.

Why acknowledgements travel over pub/sub rather than through an ack list (RPUSH + BLPOP): the
publisher's listener is already subscribed, so an ack costs one PUBLISH and no keys, no expiry,
no polling and no blocking command that would hold a pooled connection past its socket timeout;
an ack that arrives after the publisher gave up is simply dropped.

The listener knows nothing of the cache it serves (the shape of lua-resty-mlcache's IPC): it
takes a publish function and three callbacks — ``on_invalidate(key or None)``, ``on_trusted()``
when a subscription is confirmed, ``on_lost()`` when the channel can no longer be vouched for —
and owns only pub/sub liveness and message I/O.

Why the listener watches itself so closely: redis-py's asyncio ``PubSub`` reconnects and
re-subscribes silently, and messages published in the gap are lost. So:

* every subscribe confirmation of the invalidation channel flushes the L1 before it is trusted
  again (the first one too: nothing cached before it can be vouched for);
* a reconnect of the listener's connection marks the L1 untrusted at once (a connect callback
  runs before the re-subscription is even answered);
* a watchdog sends a PING whenever no frame arrived for ``watchdog_interval_seconds`` and tears
  the connection down when the PONG does not come within as long again — ``check_health`` only
  writes a PING, which succeeds on a half-open socket;
* any error marks the L1 untrusted, and the listener reconnects with a capped backoff.

On a Redis Cluster the channel is a *sharded* one (``SSUBSCRIBE``/``SPUBLISH``): classic
``PUBLISH`` is copied to every node of the cluster, and its receiver count covers only the node
that took it. The channel and the reply channels carry one hash tag (``cache_factories`` names
them), so one session on the primary that owns that slot serves both. After a failover or a slot
migration that session fails (an error, a watchdog timeout, or the server's ``sunsubscribe``);
the next one re-reads the slot map and subscribes on the new owner, and its confirmation flushes
the L1 before it is trusted, as above. On Sentinel the session's connection comes from the
sentinel-managed pool, so a reconnect asks the sentinels for the current primary; and since a
failover demotes the old primary without closing its connections, the listener also asks the
sentinels once a watchdog interval whether its server is still the primary, and moves if not.

Acknowledgements are counted against the PUBLISH/SPUBLISH receiver count only to know how long
to wait and what to report; whether a revocation is final is decided from the members registry
(``revocation_finality``), never from that count.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.sentinel import SentinelConnectionPool

from app.clients.redis_client import RedisClient
from app.clients.redis_topologies import shard_channel_pubsub

logger = logging.getLogger(__name__)

_MIN_RECONNECT_DELAY = 0.05
_MAX_RECONNECT_DELAY = 1.0
_MAX_MESSAGE_BYTES = 1_024
_STOP_TIMEOUT_SECONDS = 2.0

Publish = Callable[[str, bytes | str], Awaitable[int]]
"""PUBLISH on a channel, returning the receiver count; raises when it could not be sent."""


class ListenerStalled(Exception):
    """No frame, not even a PONG, arrived in time: the connection is presumed dead."""


class PrimaryMoved(Exception):
    """Sentinel failed over: this session's server is no longer the primary."""


class SubscriptionMoved(Exception):
    """The server dropped a sharded subscription (its slot moved): open a new session."""


# Sharded pub/sub frames mean the same as the classic ones.
_FRAME_KINDS = {"ssubscribe": "subscribe", "smessage": "message", "sunsubscribe": "unsubscribe"}


@dataclass(frozen=True, slots=True)
class Invalidation:
    """One message on the invalidation channel."""

    message_id: str
    cache_key: str | None
    reply_to: str | None

    def encode(self) -> bytes:
        return json.dumps(
            {"id": self.message_id, "key": self.cache_key, "reply": self.reply_to},
            separators=(",", ":"),
        ).encode("utf-8")


def decode_invalidation(raw: Any) -> Invalidation | None:
    """Our message, or ``None`` for anything foreign or corrupt."""
    data = _json_object(raw)
    if data is None or set(data) != {"id", "key", "reply"}:
        return None
    message_id, cache_key, reply_to = data["id"], data["key"], data["reply"]
    if not isinstance(message_id, str) or not (cache_key is None or isinstance(cache_key, str)):
        return None
    if not (reply_to is None or isinstance(reply_to, str)):
        return None
    return Invalidation(message_id=message_id, cache_key=cache_key, reply_to=reply_to)


def _json_object(raw: Any) -> dict[str, Any] | None:
    if not isinstance(raw, bytes | str) or len(raw) > _MAX_MESSAGE_BYTES:
        return None
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


@dataclass(frozen=True, slots=True)
class AckCount:
    """How a broadcast went: ``acknowledged`` of ``expected`` receivers evicted in time.

    ``listening`` is false when this process's own listener was not subscribed, so it could not
    have heard any acknowledgement.
    """

    acknowledged: int
    expected: int
    listening: bool
    by: frozenset[str] = frozenset()

    @property
    def complete(self) -> bool:
        return self.acknowledged >= self.expected


class _AckWaiter:
    """Collects the distinct acknowledgers of one message; wakes the publisher when enough."""

    def __init__(self) -> None:
        self.acknowledgers: set[str] = set()
        self.expected: int | None = None
        self.done = asyncio.Event()

    def acknowledge(self, by: str) -> None:
        self.acknowledgers.add(by)
        self._check()

    def expect(self, receivers: int) -> None:
        self.expected = receivers
        self._check()

    def _check(self) -> None:
        if self.expected is not None and len(self.acknowledgers) >= self.expected:
            self.done.set()


class InvalidationListener:
    """Keeps this process's L1 coherent with every other process's writes; see module doc."""

    def __init__(
        self,
        client: RedisClient,
        channel: str,
        *,
        publish: Publish,
        on_invalidate: Callable[[str | None], None],
        on_trusted: Callable[[], None],
        on_lost: Callable[[], None],
        watchdog_interval_seconds: float = 1.0,
    ) -> None:
        if watchdog_interval_seconds <= 0:
            raise ValueError("watchdog_interval_seconds must be positive")
        self._client = client
        self._sharded = isinstance(client, RedisCluster)
        pool = getattr(client, "connection_pool", None)
        self._sentinel_pool = pool if isinstance(pool, SentinelConnectionPool) else None
        self._refresh_slots = False
        self._channel = channel
        self._publish = publish
        self._on_invalidate = on_invalidate
        self._on_trusted = on_trusted
        self._on_lost = on_lost
        self._subscribed = False
        self._watchdog_interval = watchdog_interval_seconds
        self._listener_id = uuid.uuid4().hex
        self._reply_prefix = f"{channel}:ack:"
        self._reply_channel = self._reply_prefix + self._listener_id
        self._confirmed: set[str] = set()
        self._waiters: dict[str, _AckWaiter] = {}
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Event | None = None
        self._closing = False
        self.subscriptions = 0
        """How many times the invalidation channel was (re)subscribed (each flushed the L1)."""

    @property
    def channel(self) -> str:
        return self._channel

    @property
    def listener_id(self) -> str:
        """Who this listener acknowledges as: the process's member id in the registry."""
        return self._listener_id

    @property
    def healthy(self) -> bool:
        """Subscribed to both channels on a connection that answered the watchdog in time."""
        return len(self._confirmed) == 2 and self._subscribed

    # -- lifecycle --------------------------------------------------------------------------

    def ensure_running(self) -> None:
        """Start the listener in the running loop (lazily: the container predates the loop)."""
        loop = asyncio.get_running_loop()
        if self._task is not None and self._loop is loop and not self._task.done():
            return
        if self._loop is not loop:
            # A previous loop is gone with its task and its waiters; nothing it saw counts.
            self._lose("event loop changed")
            self._waiters.clear()
        self._loop = loop
        self._ready = asyncio.Event()
        self._closing = False
        self._task = loop.create_task(self._run(), name=f"invalidation-listener:{self._channel}")

    async def wait_healthy(self, timeout_seconds: float) -> bool:
        """Start if needed and wait, up to ``timeout_seconds``, until subscribed."""
        self.ensure_running()
        if self.healthy:
            return True
        ready = self._ready
        assert ready is not None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(timeout_seconds, 0.0)):
                await ready.wait()
        return self.healthy

    async def aclose(self) -> None:
        """Unsubscribe and stop; the L1 is untrusted until the listener runs again."""
        task, self._task = self._task, None
        self._closing = True
        # A task of a loop that is gone cannot be awaited here; that loop took it down.
        if task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop():
            task.cancel()
            # Bounded: a shutdown must not hang on a connection that will not close.
            try:
                async with asyncio.timeout(_STOP_TIMEOUT_SECONDS):
                    await asyncio.wait({task})
            except TimeoutError:
                logger.warning("API-key invalidation listener did not stop in time")
        self._lose("closed")

    # -- broadcast --------------------------------------------------------------------------

    async def broadcast(self, cache_key: str | None, *, timeout_seconds: float) -> AckCount:
        """Publish an eviction (``None`` = flush) and wait for every receiver's ack, bounded.

        A failed PUBLISH raises (``CacheUnavailable`` through the breaker): an invalidation
        that reached nobody must not look like one that reached everybody.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_seconds
        listening = await self.wait_healthy(timeout_seconds)
        message = Invalidation(
            message_id=uuid.uuid4().hex,
            cache_key=cache_key,
            reply_to=self._reply_channel if listening else None,
        )
        waiter = _AckWaiter()
        self._waiters[message.message_id] = waiter
        try:
            receivers = await self._publish(self._channel, message.encode())
            waiter.expect(int(receivers))
            if listening and not waiter.done.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(deadline):
                        await waiter.done.wait()
            return AckCount(
                acknowledged=len(waiter.acknowledgers),
                expected=int(receivers),
                listening=listening,
                by=frozenset(waiter.acknowledgers),
            )
        finally:
            self._waiters.pop(message.message_id, None)

    # -- the listening task -----------------------------------------------------------------

    async def _run(self) -> None:
        delay = _MIN_RECONNECT_DELAY
        this_task = asyncio.current_task()
        # ``cancelling()`` too: should a library swallow our cancellation while we reconnect,
        # the loop still ends (a loop shutdown waits for this task).
        while not self._closing and not (this_task is not None and this_task.cancelling()):
            subscriptions_before = self.subscriptions
            with contextlib.suppress(Exception):
                await self._listen()
            if self.subscriptions != subscriptions_before:
                delay = _MIN_RECONNECT_DELAY
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_RECONNECT_DELAY)

    async def _open_session(self) -> PubSub:
        client = self._client
        if isinstance(client, RedisCluster):
            # After a failed session, the slot's owner may have changed: re-read the map.
            return await shard_channel_pubsub(
                client, self._channel, refresh_slots=self._refresh_slots
            )
        return client.pubsub()

    async def _listen(self) -> None:
        pubsub: PubSub | None = None
        connection: AbstractConnection | None = None
        try:
            pubsub = await self._open_session()
            if self._sharded:
                await pubsub.ssubscribe(self._channel, self._reply_channel)
            else:
                await pubsub.subscribe(self._channel, self._reply_channel)
            connection = pubsub.connection
            if connection is not None:
                connection.register_connect_callback(self._on_reconnect)
            await self._pump(pubsub)
        except Exception as exc:
            self._refresh_slots = True
            self._lose(f"{type(exc).__name__}: {exc}")
            raise
        finally:
            self._lose("stopped")
            if connection is not None:
                connection.deregister_connect_callback(self._on_reconnect)  # type: ignore[no-untyped-call]
            if pubsub is not None:
                await self._release(pubsub)

    async def _pump(self, pubsub: PubSub) -> None:
        """Read frames until closed; the watchdog raises ``ListenerStalled`` on silence.

        It also stops when its task is being cancelled: redis-py can swallow a cancellation
        that lands as one of its own timeouts expires (its blocking pool turns the pair into a
        ``ConnectionError``, which the sentinel client then skips), and the pump would go on
        reading, holding up shutdown.
        """
        loop = asyncio.get_running_loop()
        this_task = asyncio.current_task()
        last_frame_at = loop.time()
        ping_sent_at: float | None = None
        primary_check_at = last_frame_at + self._watchdog_interval
        while not self._closing and not (this_task is not None and this_task.cancelling()):
            now = loop.time()
            if ping_sent_at is None:
                wait = last_frame_at + self._watchdog_interval - now
                if wait <= 0:
                    await pubsub.ping()
                    ping_sent_at = now
                    continue
            else:
                wait = ping_sent_at + self._watchdog_interval - now
                if wait <= 0:
                    raise ListenerStalled(f"no frame for {2 * self._watchdog_interval:.1f}s")
            if self._sentinel_pool is not None:
                if now >= primary_check_at:
                    await self._check_primary(pubsub)
                    primary_check_at = loop.time() + self._watchdog_interval
                    continue
                wait = min(wait, primary_check_at - now)
            frame = await pubsub.get_message(timeout=wait)
            if frame is None:
                continue
            last_frame_at = loop.time()
            ping_sent_at = None
            await self._dispatch(frame)

    async def _check_primary(self, pubsub: PubSub) -> None:
        """Sentinel: raise ``PrimaryMoved`` when the sentinels name another primary than the
        one this session is connected to.

        A failover demotes the old primary to a replica without closing its connections, and a
        replica accepts subscriptions: the session would stay there, healthy to the watchdog,
        and hear only what replication still brings it. Asking the sentinels (once a watchdog
        interval) moves it to the new primary. When no sentinel answers, the session is kept:
        its own watchdog still vouches for the connection.
        """
        pool = self._sentinel_pool
        connection = pubsub.connection
        if pool is None or connection is None:
            return
        try:
            async with asyncio.timeout(self._watchdog_interval):
                host, port = await pool.get_master_address()
        except Exception:  # no sentinel answered in time: nothing learned
            return
        current = (getattr(connection, "host", None), getattr(connection, "port", None))
        if (str(host), int(port)) != (str(current[0]), int(current[1] or 0)):
            raise PrimaryMoved(f"the sentinels name another primary ({host}:{port})")

    async def _dispatch(self, frame: dict[str, Any]) -> None:
        kind = _text(frame.get("type"))
        kind = _FRAME_KINDS.get(kind, kind) if kind is not None else None
        channel = _text(frame.get("channel"))
        if (
            self._sharded
            and kind == "unsubscribe"
            and channel in self._confirmed
            and not self._closing
        ):
            raise SubscriptionMoved(f"the server dropped {channel}")
        if kind == "subscribe":
            self._on_subscribed(channel)
        elif kind == "message" and channel == self._channel:
            await self._apply(frame.get("data"))
        elif kind == "message" and channel == self._reply_channel:
            self._record_ack(frame.get("data"))
        elif kind == "unsubscribe" and channel in self._confirmed and not self._closing:
            self._lose("unsubscribed")

    def _on_subscribed(self, channel: str | None) -> None:
        if channel == self._channel:
            self._refresh_slots = False
            # Whatever was published while we were not subscribed is lost: start from empty.
            self._on_trusted()
            self._subscribed = True
            self.subscriptions += 1
            if self.subscriptions > 1:
                logger.warning("API-key invalidation channel re-subscribed: local cache flushed")
        if channel in (self._channel, self._reply_channel):
            self._confirmed.add(channel)
        if self.healthy and self._ready is not None:
            self._ready.set()

    async def _apply(self, raw: Any) -> None:
        message = decode_invalidation(raw)
        if message is None:
            logger.warning("unreadable message on the invalidation channel: local cache flushed")
            self._on_invalidate(None)
            return
        self._on_invalidate(message.cache_key)
        reply_to = message.reply_to
        if reply_to is not None and reply_to.startswith(self._reply_prefix):
            ack = json.dumps({"id": message.message_id, "by": self._listener_id})
            # A lost acknowledgement only makes the publisher report this process as silent.
            with contextlib.suppress(Exception):
                await self._publish(reply_to, ack)

    def _record_ack(self, raw: Any) -> None:
        data = _json_object(raw)
        if data is None:
            return
        waiter = self._waiters.get(str(data.get("id")))
        if waiter is not None and isinstance(data.get("by"), str):
            waiter.acknowledge(data["by"])

    def _on_reconnect(self, connection: AbstractConnection) -> None:
        """redis-py reconnected under us: nothing is trusted until the re-subscription lands."""
        self._lose("reconnected")

    def _lose(self, reason: str) -> None:
        was_trusted = self._subscribed
        self._subscribed = False
        self._on_lost()
        self._confirmed.clear()
        if self._ready is not None:
            self._ready.clear()
        if was_trusted and not self._closing:
            logger.warning(
                "API-key invalidation listener lost (%s): bypassing the local cache", reason
            )

    async def _release(self, pubsub: PubSub) -> None:
        """Best effort: on a clean stop unsubscribe first, so we stop counting as a receiver."""
        with contextlib.suppress(Exception):
            if self._closing:
                async with asyncio.timeout(self._watchdog_interval):
                    await pubsub.unsubscribe()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(_STOP_TIMEOUT_SECONDS):
                await pubsub.aclose()  # type: ignore[no-untyped-call]


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value if isinstance(value, str) else None
