"""The daemon's keys: a host key generated once and persisted, and the authorized keys mapped to hubs.

Each `sshPublicKeys` entry is an `authorized_keys` line (options allowed, as OpenSSH reads them),
parsed by asyncssh; `from=` is matched by asyncssh too. What the options mean here:
`from=` and `expiry-time=` decide whether the key may log in from this address now;
`restrict` / `no-port-forwarding` (unless a later `port-forwarding` lifts it) forbid every forward;
`permitopen=` narrows the destinations further. Session options (`command=`, `pty`, X11, agent,
`environment=`, ...) are accepted and change nothing: sessions are refused anyway.
"""

from __future__ import annotations

import datetime
import enum
import ipaddress
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import asyncssh

# asyncssh's parser of one authorized_keys line (its key, options and `from=` matching). Its public
# SSHAuthorizedKeys only answers for a key and a client address, and the options are needed at start.
from asyncssh.auth_keys import _SSHAuthorizedKeyEntry as AuthorizedKeyLine
from asyncssh.misc import OptionsParser

from outpost.errors import ConfigurationError
from outpost.settings import SSHKeyEntry

__all__ = ["AuthorizedKeys", "Grant", "KeyRefusal", "Rule", "load_host_key"]

logger = logging.getLogger(__name__)

HOST_KEY_ALGORITHM = "ssh-ed25519"

# OpenSSH's key options (sshd(8), AUTHORIZED_KEYS FILE FORMAT) that have nothing to do for a
# daemon without sessions, listeners or tunnels. Anything else is refused: a misspelt `form=` must
# not silently widen access, and certificate options would make the line a CA, not a key.
SESSION_OPTIONS = frozenset(
    {
        "command", "environment", "pty", "no-pty", "user-rc", "no-user-rc", "agent-forwarding",
        "no-agent-forwarding", "X11-forwarding", "no-X11-forwarding", "x11-forwarding", "no-x11-forwarding",
        "permitlisten", "tunnel", "no-touch-required",
    }
)  # fmt: skip
FORWARDING_OPTIONS = frozenset({"restrict", "no-port-forwarding", "port-forwarding"})
KNOWN_OPTIONS = SESSION_OPTIONS | FORWARDING_OPTIONS | {"from", "permitopen", "expiry-time"}
EXPIRY_TIME = re.compile(r"(\d{8})(\d{4}(\d{2})?)?(Z?)")


def load_host_key(path: Path) -> asyncssh.SSHKey:
    """Read the host key at `path`, generating and persisting it (mode 0600) on first start.

    The file is written atomically, so a crash never leaves a half-written key that would
    change the fingerprint the hubs have pinned with `StrictHostKeyChecking=accept-new`.
    """
    try:
        return asyncssh.read_private_key(path)
    except FileNotFoundError:
        pass
    except (OSError, asyncssh.KeyImportError) as exc:
        raise ConfigurationError(f"cannot read SSH host key {path}: {exc}") from None
    key = asyncssh.generate_private_key(HOST_KEY_ALGORITHM)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(key.export_private_key("openssh"))
            out.flush()
            os.fsync(out.fileno())
        # Never replace a key another process wrote meanwhile: its fingerprint may be pinned already.
        os.link(tmp, path)
    except FileExistsError:
        return asyncssh.read_private_key(path)
    finally:
        os.unlink(tmp)
    logger.info("generated SSH host key %s (%s)", path, key.get_fingerprint())
    return key


class KeyRefusal(enum.StrEnum):
    """Why a key may not log in: the metric's label and the log line's `reason=`."""

    UNKNOWN = "unknown-key"
    FROM = "from-mismatch"
    EXPIRED = "key-expired"


@dataclass(frozen=True, slots=True)
class Rule:
    """What one `sshPublicKeys` entry lets its key reach: the services of `hubs` (every hub when
    None), only if `forwarding`, and only at `permitopen`'s (host, port or None) when it is set."""

    hubs: frozenset[str] | None
    forwarding: bool = True
    permitopen: frozenset[tuple[str, int | None]] | None = None

    def permits(self, host: str, port: int) -> bool:
        if not self.forwarding:
            return False
        return self.permitopen is None or (host, port) in self.permitopen or (host, None) in self.permitopen

    def allows(self, hub: str, host: str, port: int) -> bool:
        return self.permits(host, port) and (self.hubs is None or hub in self.hubs)


@dataclass(frozen=True, slots=True)
class Grant:
    """What an authenticated key may reach: anything one of its entries that let it in allows."""

    fingerprint: str
    rules: tuple[Rule, ...]

    def permits(self, host: str, port: int) -> bool:
        """Whether the key's options let it forward to host:port at all (before any lookup)."""
        return any(rule.permits(host, port) for rule in self.rules)

    def allows(self, hub: str, host: str, port: int) -> bool:
        return any(rule.allows(hub, host, port) for rule in self.rules)

    def describe(self) -> str:
        if any(rule.hubs is None for rule in self.rules):
            return "*"
        return ",".join(sorted(set().union(*(rule.hubs or () for rule in self.rules))))


@dataclass(frozen=True, slots=True)
class _Entry:
    index: int
    line: AuthorizedKeyLine  # asyncssh's parse of this entry: it matches `from=` for us
    rule: Rule
    expires: datetime.datetime | None
    summary: str


class AuthorizedKeys:
    """Public key -> its entries. A key listed several times gets what each entry that lets it in allows."""

    def __init__(self, entries: Iterable[str | SSHKeyEntry]) -> None:
        self._entries: dict[bytes, list[_Entry]] = {}
        self._fingerprints: dict[bytes, str] = {}
        for index, item in enumerate(entries):
            line, hub = (item, None) if isinstance(item, str) else (item.key, item.hub)
            try:
                key, entry = _parse(index, line.strip(), hub)
            except (asyncssh.KeyImportError, ValueError) as exc:
                raise ConfigurationError(f"sshPublicKeys[{index}]: not an authorized_keys line ({exc})") from None
            self._entries.setdefault(key.public_data, []).append(entry)
            self._fingerprints[key.public_data] = key.get_fingerprint()

    def __len__(self) -> int:
        return len(self._entries)

    def describe(self) -> Iterator[str]:
        """One line per entry for the start-up log: fingerprint, hub and options, never the key itself."""
        for public_data, entries in self._entries.items():
            for entry in entries:
                hub = "*" if entry.rule.hubs is None else ",".join(sorted(entry.rule.hubs))
                yield f"sshPublicKeys[{entry.index}] key={self._fingerprints[public_data]} hub={hub} {entry.summary}"

    def grant_for(
        self, key: asyncssh.SSHKey, client_addr: str, now: datetime.datetime | None = None
    ) -> Grant | KeyRefusal:
        """The grant of `key` logging in from `client_addr` (an IP address) at `now`, or why it may not."""
        entries = self._entries.get(key.public_data)
        if not entries:
            return KeyRefusal.UNKNOWN
        reachable = [entry for entry in entries if _from_matches(entry.line, client_addr)]
        if not reachable:
            return KeyRefusal.FROM
        moment = now or datetime.datetime.now(datetime.UTC)
        current = [entry for entry in reachable if entry.expires is None or moment < entry.expires]
        if not current:
            return KeyRefusal.EXPIRED
        return Grant(self._fingerprints[key.public_data], tuple(entry.rule for entry in current))


def _from_matches(line: AuthorizedKeyLine, client_addr: str) -> bool:
    if "from" not in line.options:
        return True
    try:
        address = ipaddress.ip_address(client_addr)
    except ValueError:
        return False
    # A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d; OpenSSH matches them as a.b.c.d.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    # As OpenSSH with `UseDNS no`: host patterns see the address; a reverse lookup is the client's to forge.
    return bool(line.match_options(str(address), str(address), None))


def _parse(index: int, text: str, hub: str | None) -> tuple[asyncssh.SSHKey, _Entry]:
    line = AuthorizedKeyLine(text)  # KeyImportError / ValueError: no key in it, or malformed options
    if line.key is None:
        raise ValueError("X.509 certificate entries are not supported")
    options = line.options
    unknown = sorted(set(options) - KNOWN_OPTIONS)
    if unknown:
        raise ValueError(f"unsupported option(s): {', '.join(unknown)}")
    permitopen = cast("set[tuple[str, int | None]] | None", options.get("permitopen"))
    # asyncssh's dict keeps an option once, where it first appears; OpenSSH reads every one in order.
    written = _RawOptions(text).written if options else []
    forwarding = _forwarding(name for name, _ in written)
    rule = Rule(
        hubs=None if hub is None else frozenset({hub}),
        forwarding=forwarding,
        permitopen=None if permitopen is None else frozenset(permitopen),
    )
    summary = _summary(written, forwarding)
    return line.key, _Entry(index, line, rule, _expiry(options.get("expiry-time")), summary)


def _forwarding(names: Iterable[str]) -> bool:
    """As OpenSSH reads the flags, each in the order written: `restrict` and `no-port-forwarding`
    forbid, `port-forwarding` allows; the last one wins (`restrict,port-forwarding,restrict` forbids)."""
    allowed = True
    for name in names:
        if name in ("restrict", "no-port-forwarding"):
            allowed = False
        elif name == "port-forwarding":
            allowed = True
    return allowed


def _expiry(values: object) -> datetime.datetime | None:
    """`expiry-time="YYYYMMDD[HHMM[SS]][Z]"`: local time as in OpenSSH, UTC with `Z`; the earliest counts."""
    if values is None:
        return None
    moments = []
    for value in cast("list[str]", values):
        match = EXPIRY_TIME.fullmatch(value)
        if match is None:
            raise ValueError(f"expiry-time={value!r}: not YYYYMMDD[HHMM[SS]][Z]")
        digits = (match.group(1) + (match.group(2) or "")).ljust(14, "0")
        try:
            moment = datetime.datetime.fromisoformat(
                f"{digits[:4]}-{digits[4:6]}-{digits[6:8]}T{digits[8:10]}:{digits[10:12]}:{digits[12:14]}"
            )
        except ValueError as exc:
            raise ValueError(f"expiry-time={value!r}: {exc}") from None
        moments.append(moment.replace(tzinfo=datetime.UTC) if match.group(4) else moment.astimezone())
    return min(moments)


class _RawOptions(OptionsParser):
    """asyncssh's option tokenizer, keeping every option as written: (name, raw value or None), in order."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.written: list[tuple[str, str | None]] = []
        self._parse_options(text)

    def _add_option(self, option: str) -> None:
        name, sep, value = option.partition("=")
        self.written.append((name, value if sep else None))


def _summary(written: list[tuple[str, str | None]], forwarding: bool) -> str:
    """The options for the log, every one in the order written: `from=`, `permitopen=` and `expiry-time=`
    with their values, the others by name only (the values of `command=` or `environment=` may hold
    secrets); then what the forwarding flags add up to."""
    if not written:
        return "options=-"
    parts = [f'{name}="{value}"' if name in ("from", "permitopen", "expiry-time") else name for name, value in written]
    return f"options={','.join(parts)} forwarding={'yes' if forwarding else 'no'}"
