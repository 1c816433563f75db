"""Where everything lives in Redis, and the Lua scripts that change it: nothing else.

Layout (every key is built by `key_*` below; components are percent-encoded, so ":" is safe):
  outpost:hub:{hub}:svc:{name}:{start_id}   hash   plain metadata + Fernet-encrypted `body`, `state`, `answer`;
                                                   `tunnelled` "1" once the hub tunnels to it (recreated at restarts)
  outpost:hub:{hub}:svc:{name}:{start_id}:certs  string  a start's pending certs (encrypted, expires)
  outpost:hub:{hub}:services                set    record keys of that hub (listing never scans others)
  outpost:addresses                         hash   "host:port" -> record key (the SSH daemon's lookup): one owner
                                                   per address, the first; an entry leaves when its server does
  outpost:addresses:changed                 channel "host:port" whose owner or owner's phase may have changed:
                                                   published by every script below that changes either
  outpost:expiry                            zset   record keys scored by the end of their runtime limit
  outpost:slots:flavor:{flavor}             string services holding a slot of that flavor (all hubs)
  outpost:slots:user:{hub}:{user}[:{flavor}] string a user's slots, in total and per flavor
  outpost:hub:{hub}:svc:{name}:{start_id}:tunnel  string the daemon recreating its tunnel (expires)
  outpost:once:{id}                         string idempotency marker of a delivered event
  outpost:stopped:{hub}:{name}:{start_id}   string tombstone of a stop (TTL): its server is never re-adopted
  outpost:lock:{name}                       string a timer run's lock (expires)
  outpost:auth:{kind}:{id}                  failed-login counters and blocks (`outpost.ratelimit`)
  outpost:uids                              hash   hub -> the uid (and gid) its local servers run as
  outpost:uid-hubs                          hash   uid -> its hub: one hub per uid, for ever

Every write may be sent twice: the client retries a command whose connection failed (a failover), and the
first attempt may have run. Writes that are not naturally idempotent carry a random write id (a record's
`created_by`, `moved_by`), by which the script recognises its own earlier run and answers as that run did.
"""

from __future__ import annotations

import functools
from urllib.parse import quote

from outpost.models import ServiceId

ADDRESSES = "outpost:addresses"
ADDRESS_CHANGES = "outpost:addresses:changed"  # pub/sub: the SSH daemons drop what they cached of an address
EXPIRY = "outpost:expiry"
HUB_UIDS = "outpost:uids"
UID_HUBS = "outpost:uid-hubs"
CERTS_TTL_SECONDS = 900
# A stop's tombstone outlives many reconciler runs (every minute), so a stopped server is never re-adopted.
TOMBSTONE_TTL_SECONDS = 3600
# Daemons that start within this many seconds of each other share one recreation per service.
TUNNEL_CLAIM_SECONDS = 60


@functools.lru_cache(maxsize=65536)  # key names are built for every request; names repeat
def _q(part: str) -> str:
    return quote(part, safe="")


def key_record(sid: ServiceId) -> str:
    return f"outpost:hub:{_q(sid.hub)}:svc:{_q(sid.name)}:{_q(sid.start_id)}"


def key_index(hub: str) -> str:
    return f"outpost:hub:{_q(hub)}:services"


def key_certs(sid: ServiceId) -> str:
    return key_record(sid) + ":certs"


def key_tombstone(sid: ServiceId) -> str:
    return f"outpost:stopped:{_q(sid.hub)}:{_q(sid.name)}:{_q(sid.start_id)}"


def key_tunnel_claim(sid: ServiceId) -> str:
    return key_record(sid) + ":tunnel"


def key_flavor_slots(flavor: str) -> str:
    return f"outpost:slots:flavor:{_q(flavor)}"


def key_user_slots(hub: str, user: str, flavor: str | None = None) -> str:
    base = f"outpost:slots:user:{_q(hub)}:{_q(user)}"
    return base if flavor is None else f"{base}:{_q(flavor)}"


def slot_keys(hub: str, user: str, flavor: str) -> list[str]:
    """The counters a service's slot is held in: of its flavor, of its user in that flavor, of its user."""
    return [key_flavor_slots(flavor), key_user_slots(hub, user, flavor), key_user_slots(hub, user)]


def key_once(marker: str) -> str:
    return f"outpost:once:{marker}"


def key_lock(name: str) -> str:
    return f"outpost:lock:{name}"


def key_snapshot(name: str) -> str:
    return f"outpost:snapshot:{name}"


def key_snapshot_claim(name: str) -> str:
    return f"outpost:snapshot-claim:{name}"


def key_login(kind: str, value: str) -> str:
    """`kind`: "fails-source", "fails-hub" or "block"; `value`, a source's id or a hub bucket (hashed)."""
    return f"outpost:auth:{kind}:{value}"


RECORD_INDEXES = "outpost:hub:*:services"  # the SCAN pattern of every hub's index


# The one place a start is admitted: checks the limits and takes a slot in one step, so concurrent starts never
# exceed a limit. Answers {verdict, count}: 'ok', or the first limit reached ('user_flavor_limit', 'flavor_full',
# 'user_total_limit', the values of `outpost.flavors.Refusal`) with the count that reached it, or 'exists'.
# The limits are checked before the record's existence, so a start of an existing service by a user at a limit
# hears of the limit. A retry of the same write (same write id, after a failover) answers 'ok' as the first did.
# KEYS: record, index, flavor slots, user-flavor slots, user slots, expiry
# ARGV: flavor_max, per_user_max, user_total_max (-1: none), end timestamp (0: none), write_id, then field/value pairs
CREATE = """
local exists = redis.call('EXISTS', KEYS[1]) == 1
if exists and redis.call('HGET', KEYS[1], 'created_by') == ARGV[5] then return {'ok', 0} end
local checks = {{KEYS[4], ARGV[2], 'user_flavor_limit'}, {KEYS[3], ARGV[1], 'flavor_full'},
                {KEYS[5], ARGV[3], 'user_total_limit'}}
for _, c in ipairs(checks) do
  local n = tonumber(redis.call('GET', c[1]) or '0')
  if tonumber(c[2]) >= 0 and n >= tonumber(c[2]) then return {c[3], n} end
end
if exists then return {'exists', 0} end
for i = 3, 5 do redis.call('INCR', KEYS[i]) end
redis.call('HSET', KEYS[1], 'slot', '1', 'created_by', ARGV[5], unpack(ARGV, 6))
redis.call('SADD', KEYS[2], KEYS[1])
if tonumber(ARGV[4]) > 0 then redis.call('ZADD', KEYS[6], ARGV[4], KEYS[1]) end
return {'ok', 0}
"""

# Tells the SSH daemons that an address's owner, or its phase, may have changed (they drop what they cached).
_CHANGED = f"""
local function changed(address)
  redis.call('PUBLISH', '{ADDRESS_CHANGES}', address)
end
"""

# Writes a server another outpost started as a RUNNING record, whole or not at all: never over an
# existing record, never over another record's address (that address's forwards belong to it).
# KEYS: record, index, flavor slots, user-flavor slots, user slots, expiry, addresses
# ARGV: end timestamp (0: none), address ("" for none), then field/value pairs
IMPORT = (
    _CHANGED
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 'exists' end
if ARGV[2] ~= '' and redis.call('HEXISTS', KEYS[7], ARGV[2]) == 1 then return 'address_taken' end
for i = 3, 5 do redis.call('INCR', KEYS[i]) end
redis.call('HSET', KEYS[1], 'slot', '1', unpack(ARGV, 3))
redis.call('SADD', KEYS[2], KEYS[1])
if tonumber(ARGV[1]) > 0 then redis.call('ZADD', KEYS[6], ARGV[1], KEYS[1]) end
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[7], ARGV[2], KEYS[1])
  changed(ARGV[2])
end
return 'ok'
"""
)

# Withdraws a record's address from the index, unless another record holds it by now; tells the SSH daemons.
_WITHDRAW = (
    _CHANGED
    + """
local function withdraw(record, addresses)
  local address = redis.call('HGET', record, 'address')
  if address and address ~= '' and redis.call('HGET', addresses, address) == record then
    redis.call('HDEL', addresses, address)
    changed(address)
  end
end
"""
)

# Deletes a record and everything pointing at it; frees its slot exactly once; leaves a tombstone.
# KEYS: record, index, certs, addresses, flavor slots, user-flavor slots, user slots, expiry, tombstone
# ARGV: tombstone TTL
FORGET = (
    _WITHDRAW
    + """
redis.call('SET', KEYS[9], '1', 'EX', ARGV[1])
if redis.call('HGET', KEYS[1], 'slot') == '1' then
  for i = 5, 7 do
    if tonumber(redis.call('DECR', KEYS[i])) < 0 then redis.call('SET', KEYS[i], 0) end
  end
end
withdraw(KEYS[1], KEYS[4])
redis.call('DEL', KEYS[1], KEYS[3])
redis.call('SREM', KEYS[2], KEYS[1])
redis.call('ZREM', KEYS[8], KEYS[1])
"""
)

# Whether a value is one of a list joined by ",".
_LISTED = """
local function listed(value, list)
  for item in string.gmatch(list, '[^,]+') do
    if item == value then return true end
  end
  return false
end
"""

# Rebuilds a lost record of a running server, unless a record or a tombstone is there: "exists", "stopped", "adopted".
# KEYS: record, index, addresses, flavor slots, user-flavor slots, user slots, expiry, tombstone
# ARGV: end timestamp (0: none), address, then field/value pairs
ADOPT = (
    _CHANGED
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 'exists' end
if redis.call('EXISTS', KEYS[8]) == 1 then return 'stopped' end
for i = 4, 6 do redis.call('INCR', KEYS[i]) end
redis.call('HSET', KEYS[1], 'slot', '1', unpack(ARGV, 3))
redis.call('SADD', KEYS[2], KEYS[1])
local holder = ARGV[2] ~= '' and redis.call('HGET', KEYS[3], ARGV[2])
if ARGV[2] ~= '' and not (holder and redis.call('EXISTS', holder) == 1) then  -- one address, one owner
  redis.call('HSET', KEYS[3], ARGV[2], KEYS[1])
  changed(ARGV[2])
end
if tonumber(ARGV[1]) > 0 then redis.call('ZADD', KEYS[7], ARGV[1], KEYS[1]) end
return 'adopted'
"""
)

# Moves a record to a new phase only from one of the allowed ones; answers the phase it found. A record at an
# address tells the SSH daemons (a STOPPING server's forwards are refused).
# KEYS: record. ARGV: new phase, allowed phases joined by ",", write id, then field/value pairs.
# A retry of the same write (same write id, after a failover) answers what the first run found.
TRANSITION = (
    _LISTED
    + _CHANGED
    + """
local phase = redis.call('HGET', KEYS[1], 'phase')
if not phase then return false end
if redis.call('HGET', KEYS[1], 'moved_by') == ARGV[3] then return redis.call('HGET', KEYS[1], 'moved_from') end
if listed(phase, ARGV[2]) then
  redis.call('HSET', KEYS[1], 'phase', ARGV[1], 'moved_by', ARGV[3], 'moved_from', phase, unpack(ARGV, 4))
  local address = redis.call('HGET', KEYS[1], 'address')
  if address and address ~= '' and ARGV[1] ~= phase then changed(address) end
end
return phase
"""
)

# Marks a record RUNNING at an address and maps the address to it in the SSH daemon's index, in one step,
# unless the address maps to another record that still holds it: the first owner keeps it. A holder whose
# server the caller saw gone (ports are reused) loses it, while its record stays; so does an earlier start
# of the same server (same hub, name and user), whose pod the Kubernetes backend replaces under the same name.
# KEYS: record, address index. ARGV: address ("": none, the server posts it to the hub itself), phases to
# start from and holding phases joined by ",",
# the key of a holder seen gone ("": none), a write id (a retry after a failover answers as the first
# run did), then field/value pairs.
# Answers the phase found, plus the holder's hub, name and start_id when refused.
CLAIM = (
    _LISTED
    + _CHANGED
    + """
local phase = redis.call('HGET', KEYS[1], 'phase')
if not phase then return false end
if redis.call('HGET', KEYS[1], 'moved_by') == ARGV[5] then return {redis.call('HGET', KEYS[1], 'moved_from')} end
if not listed(phase, ARGV[2]) then return {phase} end
local holder = ARGV[1] ~= '' and redis.call('HGET', KEYS[2], ARGV[1])
if holder and holder ~= KEYS[1] and holder ~= ARGV[4] then
  local found = redis.call('HMGET', holder, 'phase', 'hub', 'name', 'start_id', 'user')
  local mine = redis.call('HMGET', KEYS[1], 'hub', 'name', 'user')
  local earlier = found[2] == mine[1] and found[3] == mine[2] and found[5] == mine[3]
  if found[1] and listed(found[1], ARGV[3]) and not earlier then return {phase, found[2], found[3], found[4]} end
end
redis.call('HSET', KEYS[1], 'phase', 'running', 'address', ARGV[1], 'moved_by', ARGV[5], 'moved_from', phase,
           unpack(ARGV, 6))
if ARGV[1] ~= '' then
  redis.call('HSET', KEYS[2], ARGV[1], KEYS[1])
  changed(ARGV[1])
end
return {phase}
"""
)

# Marks a RUNNING record whose server is gone as ended and withdraws its address, in one step; answers
# whether it did (a second poll of the same ended server writes nothing).
# KEYS: record, address index. ARGV: new phase, then field/value pairs
END = (
    _WITHDRAW
    + """
if redis.call('HGET', KEYS[1], 'phase') ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], 'phase', ARGV[1], unpack(ARGV, 2))
withdraw(KEYS[1], KEYS[2])
return 1
"""
)


# A marker set once; its writer (the same write_id) hears "first" again when its command is repeated.
# KEYS: marker. ARGV: write_id, TTL in seconds
ONCE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return 1 end
return redis.call('GET', KEYS[1]) == ARGV[1] and 1 or 0
"""

# Replaces a field only if it still holds the value we read (a concurrent write wins).
# KEYS: hash. ARGV: field, expected value, new value
REPLACE_IF = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  return 1
end
return 0
"""

# KEYS: the address index. ARGV: "host:port". Answers hub, name, start_id, phase, or nothing.
OWNER = """
local record = redis.call('HGET', KEYS[1], ARGV[1])
if not record then return false end
local found = redis.call('HMGET', record, 'hub', 'name', 'start_id', 'phase')
if not found[4] then return false end
return found
"""

# KEYS: record. ARGV: observed exit code ("" = running), observed timestamp
OBSERVE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local before = tonumber(redis.call('HGET', KEYS[1], 'observed_at') or '0')
if tonumber(ARGV[2]) < before then return 0 end
redis.call('HSET', KEYS[1], 'observed', ARGV[1], 'observed_at', ARGV[2])
return 1
"""


# The same fields of many hashes in one command: an error (a key of the wrong type) is that key's answer.
HMGET_MANY = """
local answers = {}
for i, key in ipairs(KEYS) do
  answers[i] = redis.pcall('HMGET', key, unpack(ARGV))
end
return answers
"""


# Who recreates a service's tunnel. KEYS: claim. ARGV: claimer, TTL seconds. 1: this claimer holds it.
CLAIM_TUNNEL = """
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""

# A hub tunnels to this service: set on the record only if the record still exists (a service stopped meanwhile
# gets no stray hash). KEYS: record. Idempotent.
MARK_TUNNELLED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'tunnelled', '1')
return 1
"""

# Counts one failed login unless its source's budget is used up: the count and the verdict are one step, so
# concurrent failures of one source never get more than its budget. Each counter's window starts with its
# first failure. Once a hub bucket has more than its limit, a source's budget there is one failure.
# KEYS: block, source failures[, hub bucket failures]. ARGV: window seconds, per-source limit, per-hub limit.
# 1: counted (the failure may be answered as such); 0: the source's budget was used up before it.
COUNT_FAILURE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local budget = tonumber(ARGV[2])
if KEYS[3] then
  local hub = redis.call('INCR', KEYS[3])
  if hub == 1 then redis.call('EXPIRE', KEYS[3], ARGV[1]) end
  if hub > tonumber(ARGV[3]) then budget = 1 end
end
local failures = redis.call('INCR', KEYS[2])
if failures == 1 then redis.call('EXPIRE', KEYS[2], ARGV[1]) end
if failures >= budget then redis.call('SET', KEYS[1], '1', 'EX', ARGV[1]) end
if failures > budget then return 0 end
return 1
"""

# A hub's uid from the range first..last, the same for every process: the one it holds, or the lowest one no hub
# ever held that is not in ARGV[4..] (the system's own users and groups). A uid stays its hub's for ever (files
# it owned may remain), so a hub whose uid lies outside a changed range gets a new one. -1: the range is used up.
# A retry after a failover answers the uid the first run chose. KEYS: hub uids, uid hubs; ARGV: hub, first, last,
# then the uids to skip
ALLOCATE_UID = """
local held = tonumber(redis.call('HGET', KEYS[1], ARGV[1]))
local first, last = tonumber(ARGV[2]), tonumber(ARGV[3])
if held and held >= first and held <= last then return held end
local skip = {}
for i = 4, #ARGV do skip[ARGV[i]] = true end
for uid = first, last do
  local id = string.format('%d', uid)
  if not skip[id] and redis.call('HSETNX', KEYS[2], id, ARGV[1]) == 1 then
    redis.call('HSET', KEYS[1], ARGV[1], id)
    return uid
  end
end
return -1
"""
