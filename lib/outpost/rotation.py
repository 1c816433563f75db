"""Key rotation: re-encrypt every stored record under the first key of `OUTPOST_CRYPT_KEY`.

Run by `outpost rotate` and `outpost dev --rotate-key`. Safe during traffic (a value a request changed
meanwhile is left to that request's write, which used the first key already) and resumable (values the first
key reads are left alone).
"""

from __future__ import annotations

from collections.abc import Callable

from outpost.store import Store

Say = Callable[[str], None]


async def rotate_record(store: Store, record_key: str) -> int:
    """Re-encrypt a record's fields and pending certs under the first key; answers how many changed."""
    rotated = 0
    for value in await store.sealed_values(record_key):
        if not store.crypt.readable_by_first_key(value.token):
            rotated += int(await store.reseal(value, store.crypt.rotate(value.token)))
    return rotated


async def rotate_keys(store: Store, say: Say) -> int:
    """Re-encrypt every record under the first key; answers how many fields changed (0: done)."""
    records = fields = 0
    async for key in store.record_keys():
        fields += await rotate_record(store, key)
        records += 1
        if records % 500 == 0:
            say(f"... {records} records checked, {fields} fields re-encrypted")
    say(f"{records} records checked, {fields} fields re-encrypted under the first key")
    return fields
