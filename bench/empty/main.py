"""The baseline: an empty functions-framework aio function answering a body the size of a poll's."""

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

# A running server's poll answer, `{"status":null}` as JSONResponse renders it.
BODY = {"status": None}


@functions_framework.aio.http
async def empty_function(request: Request) -> Response:
    return JSONResponse(BODY)
