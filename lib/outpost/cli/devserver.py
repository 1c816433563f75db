"""The three functions behind one local port, routed by method and path as the Knative route does."""

from __future__ import annotations

from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from outpost.errors import ConfigurationError
from outpost.routes.framework import JsonAnswers
from outpost.routes.http import route_path

FUNCTIONS = {"start": "start_service", "poll": "poll_service", "stop": "stop_service"}


def functions_dir() -> Path:
    """The repository's `functions/` folder (the package is installed from the checkout)."""
    for candidate in (Path(__file__).resolve().parents[3] / "functions", Path.cwd() / "functions"):
        if (candidate / "poll" / "main.py").is_file():
            return candidate
    raise ConfigurationError("cannot find the functions/ folder; run `outpost dev` from the repository")


def load_function(name: str, directory: Path | None = None) -> ASGIApp:
    """Load one function exactly as functions-framework serves it in its container."""
    from functions_framework.aio import create_asgi_app

    source = (directory or functions_dir()) / name / "main.py"
    app: ASGIApp = create_asgi_app(target=FUNCTIONS[name], source=str(source))
    return app


def _is_services(path: str) -> bool:
    return path == "/services" or path.startswith("/services/")


class FunctionRouter:
    """`POST /services*` -> start, `DELETE /services*` -> stop, everything else -> poll; under
    `base_path` (OUTPOST_BASE_PATH) too."""

    def __init__(self, start: ASGIApp, poll: ASGIApp, stop: ASGIApp, base_path: str = "") -> None:
        self.start, self.poll, self.stop = start, poll, stop
        self.base_path = base_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = self.poll
        if scope["type"] == "http" and _is_services(route_path(scope["path"], self.base_path)):
            target = {"POST": self.start, "DELETE": self.stop}.get(scope["method"], self.poll)
        await target(scope, receive, send)


def build_router(directory: Path | None = None, base_path: str = "") -> ASGIApp:
    start, poll, stop = (load_function(name, directory) for name in ("start", "poll", "stop"))
    return JsonAnswers(FunctionRouter(start, poll, stop, base_path))
