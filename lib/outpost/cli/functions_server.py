"""`outpost serve-function`: one function as its container serves it. The functions-framework CLI's
app and server (gunicorn with uvicorn workers, FUNCTION_TARGET / FUNCTION_SOURCE / PORT as it reads
them), with the API's limits (`outpost.cli.httplimits`) in the workers' HTTP protocol: the
functions-framework CLI passes no options to gunicorn, so it cannot choose the worker.

gunicorn, uvicorn-worker and uvicorn come with functions-framework (pinned in pyproject.toml).
"""

from __future__ import annotations

from uvicorn_worker import UvicornWorker

from outpost import logs
from outpost.cli.httplimits import limited_protocol
from outpost.routes.framework import JsonAnswers
from outpost.settings import Settings, load_settings


def worker_class(settings: Settings) -> type[UvicornWorker]:
    """uvicorn's gunicorn worker, serving with the limited protocol (one set of counts per worker)."""
    options = {**UvicornWorker.CONFIG_KWARGS, "http": limited_protocol(settings)}
    return type("LimitedUvicornWorker", (UvicornWorker,), {"CONFIG_KWARGS": options})


def serve_function(target: str, source: str, host: str, port: int) -> None:
    """Load the function and serve it until gunicorn's signals end it."""
    from functions_framework import create_app
    from functions_framework._http import create_server  # what the functions-framework CLI calls

    settings = load_settings()  # a bad configuration ends the start here, before any worker forks
    logs.configure(json_format=settings.log_format == "json")
    app = JsonAnswers(create_app(target, source))  # its router's plain-text 404/405 answered as ours are
    create_server(app, False, worker_class=worker_class(settings)).run(host, port)
