"""The poll's floor: the empty function plus one Redis GET (redis-py's asyncio client, with hiredis when
installed, as the outpost uses it), answering the same body. What a function that must read one record
per request cannot go below with these libraries."""

import os

import functions_framework.aio
import redis.asyncio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

BODY = {"status": None}
_client: list[redis.asyncio.Redis] = []  # made in the worker, on its event loop


@functions_framework.aio.http
async def redis_get_function(request: Request) -> Response:
    if not _client:
        _client.append(redis.asyncio.Redis.from_url(os.environ["OUTPOST_REDIS_URL"]))
    await _client[0].get("bench:floor")
    return JSONResponse(BODY)
