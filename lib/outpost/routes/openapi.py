"""The API's OpenAPI 3 description, served at `GET /openapi.json` by the poll function.

A test checks it against the functions' route tables, so it stays true.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from outpost.models import StartRequest

_ERROR = {"$ref": "#/components/schemas/Error"}
_SPAWN_ERROR = {"$ref": "#/components/schemas/SpawnError"}
_START_REFUSED = (
    "refused by policy, before anything is stored (`class`: FlavorNotAllowed, FlavorFull, UserOverLimit; "
    "OverrideNotAllowed: a `misc` key the hub may not override; TemplateNotAllowed: a `misc` string with more "
    "than text and plain {field} placeholders; EnvNotAllowed: `env` names outside JUPYTERHUB_*, JUPYTER_*, JPY_* "
    "and the hub's allowedEnv, named in `args`), refused by the backend (HostNotAllowed: a dns_name_template "
    "that does not name the server's own Service; AddressTaken: an address another server or process serves, "
    "named in `args`), or the backend failed (BackendError)"
)


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    texts = {
        400: "malformed request",
        401: "missing or wrong hub credentials",
        404: "no such service for this hub",
        409: "service already active, or its record cannot be decrypted",
        413: "body too large",
        503: "state store or event broker unavailable",
    }
    answers = {str(code): _json(_ERROR, texts[code]) for code in codes}
    answers["401"] = {
        **_json(_ERROR, texts[401]),
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    }
    return answers


_NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "not": {"enum": [".", ".."]}},
    "description": "the server name; empty for a user's default server (`/services//<start_id>`)",
}
# A last segment must survive routing: '' is stripped, '.' and '..' are resolved by clients.
_SEGMENT = {"type": "string", "minLength": 1, "not": {"enum": [".", ".."]}}
_START_ID = {"name": "start_id", "in": "path", "required": True, "schema": _SEGMENT}
_NAME_ONLY = {**_NAME, "schema": _SEGMENT}
_ASYNC = {"name": "execution-type", "in": "header", "schema": {"type": "string", "enum": ["sync", "async"]}}
_LOGS = {"name": "collect_logs", "in": "query", "schema": {"type": "string", "enum": ["true", "false"]}}
_FLAVORS = _json({"$ref": "#/components/schemas/Flavors"}, "flavors available, with current usage")
_CREDITS = _json(
    {"type": "object", "additionalProperties": True},
    "credit name -> its values as configured; a forbidden user gets {cap: 0, grant_value: 0, grant_interval: 86400}",
)


def _poll(with_start_id: bool) -> dict[str, Any]:
    return {
        "summary": "Poll a server: null while it runs, its exit code once stopped",
        "parameters": [_NAME, _START_ID, _LOGS] if with_start_id else [_NAME_ONLY, _LOGS],
        "responses": {
            "200": _json({"$ref": "#/components/schemas/Status"}, "status"),
            **_errors(400, 404, 409, 503),
        },
    }


def _stop(with_start_id: bool) -> dict[str, Any]:
    return {
        "summary": "Stop a server and forget it",
        "parameters": [_NAME, _START_ID, _ASYNC, _LOGS] if with_start_id else [_NAME_ONLY, _ASYNC, _LOGS],
        "responses": {
            "200": _json(
                {"type": "object", "properties": {"logs": {"type": "array", "items": {"type": "string"}}}},
                "stopped",
            ),
            "202": _json({"type": "object"}, "stop continues in the background"),
            **_errors(400, 404, 409, 503),
        },
    }


_RATE_LIMITED = {**_json(_ERROR, "too many failed logins"), "headers": {"Retry-After": {"schema": {"type": "string"}}}}


@cache
def openapi_document() -> dict[str, Any]:
    """Every route reads (and limits) its body; every authenticated one may be rate-limited."""
    document = _document()
    for item in document["paths"].values():
        for operation in item.values():
            operation["responses"].setdefault("413", _json(_ERROR, "body too large"))
            if operation.get("security") != []:
                operation["responses"].setdefault("429", _RATE_LIMITED)
    return document


def _document() -> dict[str, Any]:
    service = {"type": "object", "required": ["service"], "properties": {"service": {"type": "string"}}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Outpost Functions",
            "version": "1.0.0",
            "description": "The JupyterHub Outpost API",
        },
        "security": [{"hub": []}],
        "paths": {
            "/ping": {
                "get": {
                    "summary": "Liveness",
                    "security": [],
                    "responses": {"200": _json({"type": "object"}, "pong")},
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": [],
                    "responses": {"200": _json({"type": "object"}, "OpenAPI")},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics (each function's own), for the scraper's bearer token only",
                    "security": [{"metrics": []}],
                    "responses": {
                        "200": {"description": "metrics", "content": {"text/plain": {"schema": {"type": "string"}}}},
                        "401": _json(_ERROR, "no or a wrong metrics token"),
                        "404": _json(_ERROR, "metrics are off (no metrics token configured)"),
                    },
                }
            },
            "/services": {
                "get": {
                    "summary": "This hub's services",
                    "responses": {
                        "200": _json({"type": "array", "items": {"$ref": "#/components/schemas/Service"}}, "services"),
                        **_errors(503),
                    },
                },
                "post": {
                    "summary": "Start a server",
                    "parameters": [_ASYNC],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/StartRequest"}}},
                    },
                    "responses": {
                        "200": _json(service, "the server's address"),
                        "202": _json(service, "start continues in the background"),
                        "419": _json(_SPAWN_ERROR, _START_REFUSED),
                        **_errors(400, 409, 413, 503),
                    },
                },
            },
            "/services/{name}": {"get": _poll(False), "delete": _stop(False)},
            "/services/{name}/{start_id}": {"get": _poll(True), "delete": _stop(True)},
            "/flavors": {"get": {"summary": "Flavors for this hub", "responses": {"200": _FLAVORS, **_errors(503)}}},
            "/userflavors": {
                "post": {
                    "summary": "Flavors for one user of this hub",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    "responses": {"200": _FLAVORS, **_errors(400, 413, 503)},
                }
            },
            "/credits": {
                "get": {
                    "summary": "Credits for this hub (JupyterHub Credit Service)",
                    "responses": {"200": _CREDITS, **_errors(503)},
                }
            },
            "/usercredits": {
                "post": {
                    "summary": "Credits for one user of this hub; the body is the user's authentication",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    "responses": {"200": _CREDITS, **_errors(400, 413, 503)},
                }
            },
        },
        "components": {
            "securitySchemes": {
                "hub": {"type": "http", "scheme": "basic"},
                "metrics": {"type": "http", "scheme": "bearer"},
            },
            "schemas": {
                "StartRequest": StartRequest.model_json_schema(ref_template="#/components/schemas/{model}"),
                "Status": {
                    "type": "object",
                    "required": ["status"],
                    "properties": {
                        "status": {"type": ["integer", "null"]},
                        "logs": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "Service": {
                    "type": "object",
                    "properties": {
                        **{
                            k: {"type": "string"}
                            for k in (
                                "name",
                                "start_id",
                                "start_date",
                                "end_date",
                                "jupyterhub",
                                "jupyterhub_userid",
                                "last_update",
                            )
                        },
                        **{k: {"type": "boolean"} for k in ("state_stored", "start_pending", "stop_pending")},
                    },
                },
                "Flavors": {"type": "object", "additionalProperties": {"type": "object"}},
                "Error": {
                    "type": "object",
                    "required": ["error", "message"],
                    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
                },
                "SpawnError": {
                    "type": "object",
                    "required": ["module", "class", "traceback", "args", "kwargs"],
                    "properties": {
                        "module": {"type": "string"},
                        "class": {"type": "string"},
                        "traceback": {"type": "string"},
                        "args": {"type": "array", "items": {"type": "string"}},
                        "kwargs": {"type": "object"},
                    },
                },
            },
        },
    }
