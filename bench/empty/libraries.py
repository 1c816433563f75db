"""The empty function plus the libraries every outpost function needs, and nothing of ours.

Its cold start is the floor set by those libraries: the settings (pydantic-settings), the store
(redis-py), encryption (cryptography), metrics (prometheus_client) and backend configuration
(traitlets).
"""

import cryptography.fernet  # noqa: F401
import functions_framework.aio
import prometheus_client  # noqa: F401
import pydantic_settings  # noqa: F401
import redis.asyncio  # noqa: F401
import traitlets.config  # noqa: F401
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

BODY = {"status": None}


@functions_framework.aio.http
async def libraries_function(request: Request) -> Response:
    return JSONResponse(BODY)
