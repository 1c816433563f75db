"""The one Redis client of a process: from a URL, or the primary that Sentinel names, followed across failovers.

Every command is retried with backoff while the connection fails (a primary killed, a failover under way,
a demoted primary answering READONLY); the store makes its writes safe to repeat (see `outpost.store.keys`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar, overload

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from outpost.errors import ConfigurationError
from outpost.settings import Settings

CONNECT_TIMEOUT_SECONDS = 2.0
COMMAND_TIMEOUT_SECONDS = 5.0
# A sentinel that does not answer at once is skipped for the next: the client's retry asks again.
SENTINEL_TIMEOUT_SECONDS = 0.5
HEALTH_CHECK_SECONDS = 30
REDIS_CONNECTIONS = 100  # per process, as redis-py's default pool
# redis-py's default pool fails a command at once (MaxConnectionsError, answered 503) when 100 are in
# flight, as in a storm of starts in one process; a blocking pool makes the 101st wait for a free
# connection, long enough for a process starved of CPU by the servers it starts (bench/storm.py).
POOL_WAIT_SECONDS = 30  # for a free connection, when all are in use
Reply = TypeVar("Reply")


@overload
def reply(command: Awaitable[Reply]) -> Awaitable[Reply]: ...
@overload
def reply(command: Awaitable[Reply] | Reply) -> Awaitable[Reply]: ...
def reply(command: Any) -> Any:
    """An async client's command, for `await`. redis-py 7 types a command as `Awaitable[T] | T` (one signature
    for its sync and async clients), which mypy refuses to await; redis-py 8 types the async client's as
    `Awaitable[T]` (the first overload). The ranges allow both, so the store awaits such commands through this."""
    return command


class PrimaryFollowingConnection(SentinelManagedConnection):
    """Asks the sentinels where the primary is on every socket (re)connect. redis-py's own class asks in
    `connect()` only, while a retried command reconnects below it, to the old primary's address
    (redis-py issues #3560, #3874), and so fails until its retries run out."""

    async def _connect(self) -> None:
        if self.connection_pool.is_master:
            self.host, self.port = await self.connection_pool.get_master_address()
        await super()._connect()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped


class FairBlockingConnectionPool(aioredis.ConnectionPool):
    """At most `max_connections`, and a command that finds them all in use waits its turn, first come first
    served, up to `timeout` seconds. redis-py's BlockingConnectionPool waits on a Condition: a woken waiter
    that finds its connection taken by a newcomer waits again at the back of the queue, so under a storm the
    first commands to queue can wait out the whole timeout (bench/storm.py: 52 of 300 starts answered 503 at
    30 s while 184 others went through). Here an asyncio.Semaphore (FIFO) gives the turns."""

    def __init__(self, *, timeout: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.timeout = timeout
        self._turns = asyncio.Semaphore(self.max_connections)

    async def get_connection(self, *_: Any, **__: Any) -> AbstractConnection:
        try:
            async with asyncio.timeout(self.timeout):
                await self._turns.acquire()
        except TimeoutError:
            raise RedisConnectionError("No connection available.") from None
        try:
            async with self._lock:
                connection: AbstractConnection = self.get_available_connection()  # type: ignore[no-untyped-call]
        except BaseException:
            self._turns.release()
            raise
        try:
            await self.ensure_connection(connection)
        except BaseException:
            await self.release(connection)
            raise
        return connection

    async def release(self, connection: AbstractConnection) -> None:
        try:
            await super().release(connection)
        finally:
            self._turns.release()


class FairSentinelConnectionPool(SentinelConnectionPool, FairBlockingConnectionPool):
    """The sentinel's pool, waiting its turn for a free connection as the URL path does. redis-py has no
    blocking sentinel pool (8.x): its SentinelConnectionPool is a plain ConnectionPool, which fails the 101st
    command in flight at once. The sentinel pool's address and ownership methods sit over the fair pool's
    get_connection/release."""


def _retry(settings: Settings) -> Retry:
    return Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries=settings.redis_retries)


def redis_client(settings: Settings) -> aioredis.Redis:
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    common: dict[str, Any] = {
        "password": password,
        "socket_connect_timeout": CONNECT_TIMEOUT_SECONDS,
        # longer than a WAIT may block, or a slow acknowledgement would read as a dead connection
        "socket_timeout": max(COMMAND_TIMEOUT_SECONDS, settings.redis_wait_timeout_ms / 1000 + 1),
        "health_check_interval": HEALTH_CHECK_SECONDS,
        "retry": _retry(settings),
    }
    if settings.redis_sentinels:
        sentinel_password = settings.redis_sentinel_password
        sentinel = Sentinel(  # type: ignore[no-untyped-call,unused-ignore]  # untyped before redis-py 8
            settings.sentinel_addresses(),
            sentinel_kwargs={
                "password": sentinel_password.get_secret_value() if sentinel_password else None,
                "socket_connect_timeout": SENTINEL_TIMEOUT_SECONDS,
                "socket_timeout": SENTINEL_TIMEOUT_SECONDS,
                "retry": Retry(NoBackoff(), 0),
            },
        )
        client: aioredis.Redis = sentinel.master_for(
            settings.redis_sentinel_master,
            connection_pool_class=FairSentinelConnectionPool,
            connection_class=PrimaryFollowingConnection,
            max_connections=REDIS_CONNECTIONS,
            timeout=POOL_WAIT_SECONDS,
            **common,
        )
        return client
    if settings.redis_url is None:
        raise ConfigurationError(
            "no Redis configured: set OUTPOST_REDIS_URL or OUTPOST_REDIS_SENTINELS (or run `outpost dev`)"
        )
    pool = FairBlockingConnectionPool.from_url(
        settings.redis_url.get_secret_value(), max_connections=REDIS_CONNECTIONS, timeout=POOL_WAIT_SECONDS, **common
    )
    return aioredis.Redis.from_pool(pool)
