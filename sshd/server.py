"""The forward-only SSH server: each hub's key may open direct-tcpip channels to that hub's running
services, looked up when the channel opens (`sshd.addresses`: from memory, kept in step with the store);
everything else is refused.

Policy lives in `ForwardOnlyServer`'s callbacks, the mechanism in asyncssh. Callbacks that are not
overridden deny (sessions, shell, exec, SFTP, agent and X11 forwarding, remote forwards).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable
from typing import Protocol, cast

import asyncssh
from asyncssh import ChannelOpenError, SSHTCPSession

from outpost.connlimits import RefusalLog
from outpost.errors import TooManyAttempts
from outpost.logs import escape
from outpost.models import ACTIVE_PHASES, ServiceId
from outpost.ratelimit import FailureCounts, LoginGuard
from outpost.settings import Settings
from outpost.store import UNREACHABLE, AddressOwner
from sshd import metrics
from sshd.addresses import AddressCache, AddressIndex
from sshd.coalesce import coalesce_writes
from sshd.forwards import ChannelSide, Forward, ForwardLog, ServiceSide
from sshd.keys import AuthorizedKeys, Grant, KeyRefusal, load_host_key
from sshd.limits import ConnectionCounter, GatedListener, Startups

__all__ = ["ENCRYPTION_ALGS", "ForwardOnlyServer", "ForwardRefusal", "Listener", "Policy", "serve"]

logger = logging.getLogger(__name__)

# The client picks the first of its own ciphers the server offers. OpenSSH prefers chacha20 and
# aes-ctr, both much slower in Python than AES-GCM (AES-NI through `cryptography`), so only GCM is
# offered; every OpenSSH since 6.2 supports it.
ENCRYPTION_ALGS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
KEEPALIVE_COUNT_MAX = 3
SERVER_VERSION = "OutpostSSHD"
REFUSED = "not a running service of this hub"
MAX_NOTED = 4096  # services one connection remembers having noted as tunnelled


class ForwardRefusal(enum.StrEnum):
    """Why a forward was refused: the `reason=` of its log line and the metric's label."""

    NOT_A_SERVICE = "not-a-service"
    OTHER_HUB = "other-hub"
    NOT_RUNNING = "not-running"
    CHANNEL_LIMIT = "channel-limit"
    LOOKUP_FAILED = "lookup-failed"
    CONNECT_FAILED = "connect-failed"
    KEY_OPTIONS = "key-options"


class AddressLookup(AddressIndex, Protocol):
    """`outpost.store.Store`: which service, if any, listens at host:port and the changes of that index
    (`sshd.addresses`); the failed-login counts; and noting that a hub tunnels to a service, so that its
    tunnel is rebuilt after a restart (`sshd.tunnels`)."""

    def mark_tunnelled(self, sid: ServiceId) -> Awaitable[bool]: ...

    @property
    def logins(self) -> FailureCounts: ...


class Policy:
    """What every connection of one listener shares: settings, keys, the lookup and the caps."""

    def __init__(self, settings: Settings, index: AddressLookup) -> None:
        self.username = settings.ssh_username
        self.keys = AuthorizedKeys(settings.ssh_public_keys)
        self.index = index
        self.lookup = AddressCache(index, settings.ssh_address_cache_seconds)
        # The API's limit on failed logins, in the same counters: a source's refused keys and wrong
        # passwords spend one budget.
        self.guard = LoginGuard(index.logins, settings.login_limits())
        self.connections = ConnectionCounter(settings.ssh_max_connections_per_key)
        self.max_channels = settings.ssh_max_channels_per_connection
        self.idle_timeout = settings.ssh_idle_timeout_seconds
        self.startups = Startups(settings.ssh_max_startups_per_source, settings.ssh_early_drop(), RefusalLog(logger))
        self.live: set[asyncssh.SSHServerConnection] = set()


class ForwardOnlyServer(asyncssh.SSHServer):
    """One SSH connection: public-key auth for the configured user, then local forwards only."""

    def __init__(self, policy: Policy) -> None:
        self._policy = policy
        self._conn: asyncssh.SSHServerConnection | None = None
        self._peer = "?"
        self._peername = ("?", 0)  # admitted by the listener's Startups; released once authenticated
        self._grant: Grant | None = None
        self._admitted = False
        self._claimed = False
        self._channels = 0
        self._idle: asyncio.TimerHandle | None = None
        self._tunnelled: set[ServiceId] = set()  # noted in the store by this connection
        self._forwards = ForwardLog(self._peer)

    # --- connection lifecycle -----------------------------------------------------------------

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        self._policy.live.add(conn)
        metrics.CONNECTIONS.inc()
        coalesce_writes(conn)
        peer = conn.get_extra_info("peername")
        self._peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self._peername = (peer[0], peer[1]) if peer else self._peername
        self._forwards.peer = self._peer
        self._arm_idle_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._policy.startups.release(self._peername)
        metrics.CONNECTIONS.dec()
        self._forwards.close()
        if self._idle is not None:
            self._idle.cancel()
        if self._claimed and self._grant is not None:
            self._policy.connections.release(self._grant.fingerprint, self)
            logger.info("connection closed peer=%s key=%s", self._peer, self._grant.fingerprint)
        if self._conn is not None:
            self._policy.live.discard(self._conn)
        self._conn = None

    # --- authentication: public keys of the configured user only ------------------------------

    def begin_auth(self, username: str) -> bool:
        return True  # always authenticate; a wrong user name simply matches no key

    def public_key_auth_supported(self) -> bool:
        return True

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        # Called for the client's query and again for the signed request, so the last key
        # validated is the one that authenticated.
        grant = self._policy.keys.grant_for(key, self._peer_address())
        if username != self._policy.username:
            grant = KeyRefusal.UNKNOWN
        if isinstance(grant, KeyRefusal):
            self._refuse_key(key, grant)
            # Counted before the refusal is answered: past its budget the source hears nothing more.
            await self._login_check(self._policy.guard.fail(self._peer_address(), None))
            return False
        if not self._admitted:  # once per connection: one read, as for the API's right passwords
            self._admitted = await self._login_check(self._policy.guard.admit(self._peer_address()))
            if not self._admitted:
                return False
        if self._policy.connections.count(grant.fingerprint) >= self._policy.connections.limit:
            self._refuse_connection(grant)
            return False
        self._grant = grant
        return True

    async def _login_check(self, check: Awaitable[None]) -> bool:
        """Whether the guard let the source go on; a source past its budget is disconnected. Without
        Redis, keys are still checked (only forwards need it): the limit waits for it."""
        try:
            await check
        except TooManyAttempts:
            metrics.AUTH_REFUSED.labels("too-many-failures").inc()
            if self._conn is not None:
                self._conn.disconnect(asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE, "too many failed logins")
            return False
        except UNREACHABLE as exc:
            logger.warning("login limit not checked peer=%s: store unavailable (%s)", self._peer, type(exc).__name__)
        return True

    def auth_completed(self) -> None:
        # A key counts against its cap only once its signature checked out: anyone may know a
        # public key and query it, and must not fill the cap of the hub that holds the private key.
        assert self._grant is not None and self._conn is not None
        self._policy.startups.release(self._peername)
        if self._policy.connections.claim(self._grant.fingerprint, self):
            self._claimed = True
        else:
            self._refuse_connection(self._grant)
            self._conn.disconnect(asyncssh.DISC_TOO_MANY_CONNECTIONS, "too many connections with this key")

    def _peer_address(self) -> str:
        peer = self._conn.get_extra_info("peername") if self._conn is not None else None
        return str(peer[0]) if peer else ""

    def _refuse_key(self, key: asyncssh.SSHKey, refusal: KeyRefusal) -> None:
        metrics.AUTH_REFUSED.labels(refusal.value).inc()
        if refusal is not KeyRefusal.UNKNOWN:  # a listed key turned away by its options: say so once per try
            logger.info("login refused peer=%s key=%s reason=%s", self._peer, key.get_fingerprint(), refusal.value)

    def _refuse_connection(self, grant: Grant) -> None:
        metrics.AUTH_REFUSED.labels("key-connection-limit").inc()
        logger.warning(
            "connection refused peer=%s key=%s: already %d connections with this key",
            self._peer, grant.fingerprint, self._policy.connections.limit,
        )  # fmt: skip

    # --- channels: direct-tcpip to this hub's running services --------------------------------

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> Awaitable[SSHTCPSession[bytes]]:
        grant = self._grant
        if grant is None or not self._claimed:  # asyncssh only asks after auth; never forward without it
            raise ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, "not authenticated")
        if not grant.permits(dest_host, dest_port):
            self._log_refused(grant, dest_host, dest_port, ForwardRefusal.KEY_OPTIONS)
            raise ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, "not permitted by this key's options")
        if self._channels >= self._policy.max_channels:
            self._log_refused(grant, dest_host, dest_port, ForwardRefusal.CHANNEL_LIMIT)
            raise ChannelOpenError(
                asyncssh.OPEN_RESOURCE_SHORTAGE,
                f"at most {self._policy.max_channels} channels per connection",
            )
        self._channels += 1
        self._disarm_idle_timer()
        return self._open_forward(grant, dest_host, dest_port)

    async def _open_forward(self, grant: Grant, host: str, port: int) -> SSHTCPSession[bytes]:
        try:
            owner = await self._authorize(grant, host, port)
            await self._note_tunnel(owner)
            forward = Forward(owner, f"{host}:{port}", self.channel_closed)
            loop = asyncio.get_running_loop()
            try:
                _, service = await loop.create_connection(lambda: ServiceSide(forward), host, port)
            except OSError as exc:
                self._log_refused(grant, host, port, ForwardRefusal.CONNECT_FAILED, f"error={type(exc).__name__}")
                raise ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, "service not reachable") from None
            if self._conn is None:  # the SSH connection went away while we connected
                service.close()
                raise ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, "SSH connection closed")
        except BaseException:
            self.channel_closed()
            raise
        forward.opened(self._forwards)
        # A forwarder is the session asyncssh's own forward_connection() hands back, typed the same way.
        return cast("SSHTCPSession[bytes]", ChannelSide(forward, service))  # a string: no subscripting per channel

    async def _authorize(self, grant: Grant, host: str, port: int) -> AddressOwner:
        try:
            owner = await self._policy.lookup.address_owner(host, port)
        except Exception as exc:
            self._log_refused(grant, host, port, ForwardRefusal.LOOKUP_FAILED, f"error={type(exc).__name__}")
            raise ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, "service lookup failed") from None
        if owner is None:
            self._log_refused(grant, host, port, ForwardRefusal.NOT_A_SERVICE)
        elif not grant.allows(owner.hub, host, port):
            self._log_refused(grant, host, port, ForwardRefusal.OTHER_HUB, f"owner={escape(owner.hub)}")
        elif owner.phase not in ACTIVE_PHASES:
            self._log_refused(grant, host, port, ForwardRefusal.NOT_RUNNING, f"phase={owner.phase}")
        else:
            return owner
        # The client learns no more than this: whether another hub's service is there is not its business.
        raise ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, REFUSED)

    async def _note_tunnel(self, owner: AddressOwner) -> None:
        """The hub tunnels to this service: say so in its record, once per connection (one write per service,
        not per channel). A failure is logged and forwards anyway."""
        sid = ServiceId(owner.hub, owner.name, owner.start_id)
        if sid in self._tunnelled:
            return
        if len(self._tunnelled) >= MAX_NOTED:  # a master that lives for months: forget, and note again
            self._tunnelled.clear()
        try:
            await self._policy.index.mark_tunnelled(sid)
        except Exception as exc:
            logger.warning(
                "could not note the tunnel to %s (%s): it is not recreated after a restart", sid, type(exc).__name__
            )
            return
        self._tunnelled.add(sid)

    def channel_closed(self) -> None:
        self._channels -= 1
        if self._channels == 0:
            self._arm_idle_timer()

    def _log_refused(self, grant: Grant, host: str, port: int, reason: ForwardRefusal, detail: str = "") -> None:
        metrics.FORWARDS_REFUSED.labels(reason.value).inc()
        logger.info(
            "forward refused hubs=%s dest=%s:%d peer=%s reason=%s%s",
            grant.describe(), escape(host), port, self._peer, reason.value, f" {detail}" if detail else "",
        )  # fmt: skip

    # --- idle timeout: a connection without forwards for this long is closed ------------------

    def _arm_idle_timer(self) -> None:
        if self._policy.idle_timeout and self._conn is not None:
            self._disarm_idle_timer()
            self._idle = asyncio.get_running_loop().call_later(self._policy.idle_timeout, self._idle_expired)

    def _disarm_idle_timer(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def _idle_expired(self) -> None:
        if self._conn is not None and self._channels == 0:
            logger.info("connection idle peer=%s: closing", self._peer)
            self._conn.disconnect(asyncssh.DISC_BY_APPLICATION, "idle timeout")


class Listener:
    """A listening daemon: `port` (the real one when 0 was asked for), `close()` and `wait_closed()`.

    Unlike closing the bare asyncssh acceptor, `close()` also ends the open connections, as a
    process exit would, so the hubs' masters notice and reconnect.
    """

    def __init__(self, acceptor: asyncssh.SSHAcceptor, policy: Policy, host_key: asyncssh.SSHKey) -> None:
        self._acceptor = acceptor
        self._policy = policy
        self.port = acceptor.get_port()
        self.host_key_fingerprint = host_key.get_fingerprint()

    def close(self) -> None:
        self._acceptor.close()
        for conn in list(self._policy.live):
            conn.close()

    async def wait_closed(self) -> None:
        await self._acceptor.wait_closed()
        for conn in list(self._policy.live):
            await conn.wait_closed()
        await self._policy.lookup.aclose()

    async def __aenter__(self) -> Listener:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
        await self.wait_closed()


async def serve(settings: Settings, index: AddressLookup) -> Listener:
    """Listen on `settings.ssh_listen_host:ssh_port` (port 0 picks a free one) in the running loop.

    `python -m sshd` runs it on uvloop; `outpost dev` may run it in its own loop. Use the result
    as an async context manager, or `close()` then `await wait_closed()`.
    """
    # asyncssh logs several lines per channel, with the client's host and user name as they came (a
    # newline in a host wrote a line of its own); ours is the one escaped line per forward.
    asyncssh.set_log_level(logging.WARNING)
    policy = Policy(settings, index)
    host_key = load_host_key(settings.ssh_host_key)
    acceptor = await asyncssh.listen(
        settings.ssh_listen_host,
        settings.ssh_port,
        tunnel=GatedListener(policy.startups),
        server_factory=lambda: ForwardOnlyServer(policy),
        server_host_keys=[host_key],
        server_version=SERVER_VERSION,
        encryption_algs=list(ENCRYPTION_ALGS),
        compression_algs=["none"],
        public_key_auth=True,
        password_auth=False,
        kbdint_auth=False,
        host_based_auth=False,
        gss_host=None,
        agent_forwarding=False,
        x11_forwarding=False,
        allow_scp=False,
        allow_pty=False,
        login_timeout=settings.ssh_login_grace_seconds,
        keepalive_interval=settings.ssh_keepalive_seconds,
        keepalive_count_max=KEEPALIVE_COUNT_MAX,
        tcp_keepalive=True,
    )
    logger.info(
        "sshd listening on %s:%d user=%s keys=%d host key %s",
        settings.ssh_listen_host, acceptor.get_port(), settings.ssh_username,
        len(policy.keys), host_key.get_fingerprint(),
    )  # fmt: skip
    for entry in policy.keys.describe():
        logger.info("authorized %s", entry)
    policy.lookup.start()  # once listening: a daemon that cannot listen leaves nothing running
    return Listener(acceptor, policy, host_key)
