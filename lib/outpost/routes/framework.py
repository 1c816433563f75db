"""The answers functions-framework's own router gives before our code runs, in our JSON shape.

Its Starlette app routes `/{path:path}` to the function, a pattern a decoded newline (`%0a`) does not
match, keeps `/robots.txt` and `/favicon.ico` for itself, and routes seven methods: anything else got a
plain-text 404 or 405. `JsonAnswers` wraps such an app and answers those through `error_response`.
"""

from __future__ import annotations

from http import HTTPStatus

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from outpost import errors
from outpost.routes.http import error_response

_REPLACED = {HTTPStatus.NOT_FOUND: errors.UnknownRoute, HTTPStatus.METHOD_NOT_ALLOWED: errors.MethodNotAllowed}


def _plain_text(message: Message) -> bool:
    return any(key == b"content-type" and value.startswith(b"text/plain") for key, value in message["headers"])


class JsonAnswers:
    """An ASGI app whose plain-text 404 and 405 answers (never ours: ours are JSON) become JSON ones."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        replaced = False

        async def send_json(message: Message) -> None:
            nonlocal replaced
            if replaced:  # the framework's body: ours went out already
                return
            if message["type"] == "http.response.start" and message["status"] in _REPLACED and _plain_text(message):
                replaced = True
                error = _REPLACED[message["status"]](f"no route for {scope['method']} {scope['path']}")
                await error_response(error)(scope, receive, send)
                return
            await send(message)

        await self.app(scope, receive, send_json)
