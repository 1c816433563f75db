"""Property tests of the library's parsers: each turns any input into a value or its one documented
error, and accepts everything valid."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import yaml
from cryptography.fernet import Fernet
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from outpost import auth, errors
from outpost.cli.devserver import functions_dir
from outpost.crypto import Crypt
from outpost.flavor_rules import FlavorConfigError, FlavorPolicy
from outpost.flavors import Refusal, admission, allowed_flavors, counted_refusal
from outpost.models import MAX_NAME_LENGTH, StartRequest
from outpost.ratelimit import LoginGuard, LoginLimits
from outpost.routes.http import Call, Route, _find
from outpost.settings import Settings, load_settings
from outpost.store import LoginCounters
from tests.fuzz.harness import FUZZ, STATS

pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

KEYS = [Fernet.generate_key().decode() for _ in range(3)]
CREDENTIALS = {"hubA": "password-a", "hubB": "pa:ss;wörd", "hub with space": ""}

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
hub_names = st.text(min_size=1).filter(lambda name: ":" not in name)


def counted() -> None:
    STATS.property_examples += 1


def basic_header(user: str, password: str, scheme: str = "Basic") -> str:
    return f"{scheme} " + base64.b64encode(f"{user}:{password}".encode()).decode()


# --- auth ---------------------------------------------------------------------------------------

headers = st.one_of(
    st.none(),
    st.text(),
    st.builds(
        lambda s, b: f"{s} {base64.b64encode(b).decode()}",
        st.sampled_from(["Basic", "basic", "BASIC", "Bearer"]),
        st.binary(),
    ),
    st.builds(basic_header, st.text(), st.text(), st.sampled_from(["Basic", "bAsIc", "Basic "])),
    st.builds(lambda text: "Basic " + text, st.text(alphabet="ABCDEFGHabcdefgh0123456789+/=: \t\n")),
)


@FUZZ
@given(header=headers)
def test_parse_basic_raises_only_unauthorized(header: str | None) -> None:
    counted()
    try:
        hub, password = auth.parse_basic(header)
    except errors.Unauthorized:
        return
    assert isinstance(hub, str) and isinstance(password, str)
    assert auth.verify(hub, password, CREDENTIALS) == (CREDENTIALS.get(hub) == password)


@FUZZ
@given(
    hub=hub_names,
    password=st.text(),
    scheme=st.sampled_from(["Basic", "basic", "BASIC"]),
    padding=st.sampled_from(["", " ", "  ", "\t"]),
)
def test_every_well_formed_credential_parses_back(hub: str, password: str, scheme: str, padding: str) -> None:
    counted()
    header = f"{scheme} {padding}" + base64.b64encode(f"{hub}:{password}".encode()).decode() + padding
    assert auth.parse_basic(header) == (hub, password)
    credentials = {hub: password}
    assert auth.verify(hub, password, credentials)
    assert not auth.verify(hub, password + "x", credentials)
    assert not auth.verify(hub + "x", password, credentials)


@pytest.mark.asyncio(loop_scope="session")
@FUZZ
@given(header=headers, valid=st.sampled_from(sorted(CREDENTIALS)) | st.none())
async def test_authenticate_accepts_valid_and_raises_only_unauthorized(
    redis: aioredis.Redis, header: str | None, valid: str | None
) -> None:
    counted()
    guard = LoginGuard(
        LoginCounters(redis), LoginLimits(per_source=10**9, per_hub=10**9, window_seconds=60)
    )  # never reached
    logins = auth.HubLogins(CREDENTIALS)
    if valid is not None:
        header = basic_header(valid, CREDENTIALS[valid])
        assert await auth.authenticate(header, "198.51.100.7", logins, guard) == valid
        assert await auth.authenticate(header, "198.51.100.7", logins, guard) == valid  # remembered
        return
    try:
        hub = await auth.authenticate(header, "198.51.100.7", logins, guard)
    except errors.Unauthorized:
        return
    assert header is not None and auth.parse_basic(header) == (hub, CREDENTIALS[hub])


# --- the start body -----------------------------------------------------------------------------

start_like = st.fixed_dictionaries(
    {},
    optional={
        "name": json_values | st.text(max_size=300),
        "env": st.dictionaries(st.text(max_size=10), json_values, max_size=4) | json_values,
        "user_options": st.fixed_dictionaries({}, optional={"start_id": json_values, "flavor": json_values})
        | json_values,
        "misc": json_values,
        "certs": json_values,
        "internal_trust_bundles": json_values,
        "authentication": json_values,
    },
)


@FUZZ
@given(data=start_like | json_values)
def test_start_request_raises_only_validation_errors(data: Any) -> None:
    counted()
    try:
        request = StartRequest.model_validate(data)
    except ValidationError:
        return
    assert "/" not in request.name and request.name.isprintable() and len(request.name) <= MAX_NAME_LENGTH
    assert "/" not in request.start_id and len(request.start_id) <= MAX_NAME_LENGTH
    assert request.flavor is None or isinstance(request.flavor, str)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in request.env.items())
    json.dumps(request.without_certs())  # what the store encrypts


@FUZZ
@given(raw=st.binary() | (start_like | json_values).map(lambda v: json.dumps(v).encode()))
def test_request_bodies_raise_only_bad_request(raw: bytes) -> None:
    """`Call.json`: bytes to a StartRequest, or a 400 (InvalidJSON, InvalidBody)."""
    counted()
    call = Call(None, "hubA", {}, {}, {}, raw)  # type: ignore[arg-type]
    try:
        call.json(StartRequest)
    except errors.BadRequest:
        pass


# --- encryption ---------------------------------------------------------------------------------


@FUZZ
@given(value=json_values, keys=st.permutations(KEYS))
def test_crypt_round_trip_and_rotation(value: Any, keys: list[str]) -> None:
    counted()
    old, new = Crypt(keys[:1]), Crypt(keys)
    token = old.encrypt_json(value)
    assert old.decrypt_json(token) == value
    assert new.decrypt_json(token) == value  # the old key still decrypts
    rotated = new.rotate(token)
    assert Crypt(keys[:1]).decrypt_json(rotated) == value  # re-encrypted under the first key
    with pytest.raises(errors.UndecryptableRecord):
        Crypt(keys[1:]).decrypt_json(token)


@FUZZ
@given(value=json_values, position=st.integers(min_value=0), flip=st.integers(1, 255), cut=st.integers(min_value=0))
def test_tampered_records_are_undecryptable(value: Any, position: int, flip: int, cut: int) -> None:
    """Any change to a record's bytes (the token base64-decoded), or a truncation, is detected."""
    counted()
    crypt = Crypt(KEYS)
    raw = bytearray(base64.urlsafe_b64decode(crypt.encrypt_json(value)))
    truncated = bytes(raw[: cut % len(raw)])
    raw[position % len(raw)] ^= flip
    for tampered in (bytes(raw), truncated):
        with pytest.raises(errors.UndecryptableRecord):
            crypt.decrypt_json(base64.urlsafe_b64encode(tampered))


@FUZZ
@given(token=st.binary() | st.text())
def test_decrypt_raises_only_undecryptable(token: bytes | str) -> None:
    counted()
    with pytest.raises(errors.UndecryptableRecord):
        Crypt(KEYS).decrypt_json(token)


@FUZZ
@given(keys=st.lists(st.text() | st.binary().map(lambda b: base64.urlsafe_b64encode(b).decode()), max_size=3))
def test_crypt_keys_raise_only_configuration_error(keys: list[str]) -> None:
    counted()
    try:
        Crypt(keys)
    except errors.ConfigurationError:
        pass


# --- settings files -----------------------------------------------------------------------------

FIELDS = sorted(Settings.model_fields)
setting_keys = st.one_of(
    st.sampled_from(FIELDS),
    st.sampled_from(FIELDS).map(lambda f: f.split("_")[0] + "".join(p.title() for p in f.split("_")[1:])),
    st.text(max_size=12),
)
yaml_documents = st.one_of(
    st.dictionaries(setting_keys, json_values, max_size=6).map(lambda d: yaml.safe_dump(d, allow_unicode=True)),
    json_values.map(lambda v: yaml.safe_dump(v, allow_unicode=True)),
    st.text(),
    st.sampled_from(
        [
            "x: &a [*a]",
            "flavors: &a {f: *a}",
            "users: &a {u: {authentication: *a}}",
            "? [a]\n: 1",
            "maxBodyBytes: 1e400",
            "hubUsernames: !!python/object:os.system {}",
            "---\n---\n",
            "\t",
            "%YAML 9",
        ]
    ),
)


@pytest.fixture
def no_outpost_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The YAML file alone decides (the environment is restored by the autouse isolation fixture)."""
    for name in list(os.environ):
        if name.startswith("OUTPOST_") or name == "REDIS_URL":
            monkeypatch.delenv(name)


@FUZZ
@given(document=yaml_documents)
def test_settings_files_raise_only_configuration_error(
    tmp_path: Path, no_outpost_environment: None, document: str
) -> None:
    counted()
    path = tmp_path / "values.yaml"
    path.write_text(document, encoding="utf-8", errors="surrogatepass")
    try:
        settings = load_settings(path, crypt_key=KEYS[0])
    except errors.ConfigurationError:
        return
    assert isinstance(settings, Settings)


@FUZZ
@given(
    values=st.fixed_dictionaries(
        {},
        optional={
            "flavors": st.dictionaries(st.text(max_size=6), json_values, max_size=3) | json_values,
            "users": st.dictionaries(st.text(max_size=6), json_values, max_size=3) | json_values,
            "hubs": st.dictionaries(st.text(max_size=6), json_values, max_size=3) | json_values,
            "maxPerUserTotal": json_values,
        },
    )
)
def test_flavor_configuration_raises_only_flavor_config_error(values: dict[str, Any]) -> None:
    counted()
    try:
        FlavorPolicy.from_values(values)
    except FlavorConfigError:
        pass


POLICY = FlavorPolicy.from_values(
    {
        "flavors": {"small": {"max": 2}, "large": {"maxPerUser": 1, "runtime": {"hours": 1}}},
        "users": {
            "regex": {"authentication": {"name": "^a.*$"}, "flavors": ["small"], "weight": 2},
            "glob": {"authentication": {"groups": "adm*"}, "weight": 1},
            "exact": {"authentication": {"name": ["bob", "carol"]}, "forbidden": True, "weight": 3},
            "invalid-regex": {"authentication": {"name": "(["}, "negate_authentication": True},
        },
        "hubs": {"hubA": {"jupyterhub_name": "hub[AB]", "flavors": ["small", "large"]}},
    }
)


@FUZZ
@given(
    authentication=st.dictionaries(st.sampled_from(["name", "groups", "x"]) | st.text(max_size=5), json_values)
    | json_values,
    hub=st.sampled_from(["hubA", "hubB", "other"]) | st.text(),
    flavor=st.none() | st.sampled_from(["small", "large", "none"]) | st.text(max_size=5),
    count=st.integers(0, 5),
)
def test_flavor_rules_decide_on_any_authentication(
    authentication: Any, hub: str, flavor: str | None, count: int
) -> None:
    """A `/userflavors` body and a start's `authentication` are whatever the hub's user has."""
    counted()
    auth_dict = authentication if isinstance(authentication, dict) else None
    allowed = allowed_flavors(POLICY, hub, auth_dict)
    assert set(allowed) <= {"small", "large"}
    decision = admission(POLICY, hub, auth_dict, flavor)
    assert decision.refusal is None or decision.message
    if decision.allowed:  # whatever limit the store's count finds reached, the hub is told in words
        for verdict in (Refusal.USER_FLAVOR_LIMIT, Refusal.FLAVOR_FULL, Refusal.USER_TOTAL_LIMIT):
            assert counted_refusal(decision, flavor or "", verdict, count).message


# --- routing ------------------------------------------------------------------------------------


def _routes(function: str) -> list[Route]:
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"fuzz_routes_{function}", functions_dir() / function / "main.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.ROUTES)


TABLES = {name: _routes(name) for name in ("start", "poll", "stop")}
segment = st.text().filter(lambda s: "/" not in s)


@FUZZ
@given(name=segment, start_id=segment)
def test_route_parameters_round_trip(name: str, start_id: str) -> None:
    counted()
    route, params = _find(TABLES["poll"], "GET", f"/services/{name}/{start_id}")
    assert params == {"name": name, "start_id": start_id}
    route, params = _find(TABLES["stop"], "DELETE", f"/services/{name}/{start_id}")
    assert params == {"name": name, "start_id": start_id}


@FUZZ
@given(
    path=st.lists(st.text(max_size=8) | st.sampled_from(["services", "flavors", "ping", ""]), max_size=4).map(
        lambda parts: "/" + "/".join(parts)
    ),
    method=st.sampled_from(["GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS"]) | st.text(max_size=6),
)
def test_route_matching_raises_only_not_found_or_method_not_allowed(path: str, method: str) -> None:
    """And at most one function serves a (method, path): the router's split agrees with the tables."""
    counted()
    serving = []
    for function, table in TABLES.items():
        try:
            route, params = _find(table, method, path)
        except (errors.UnknownRoute, errors.MethodNotAllowed):
            continue
        assert route.method == method and route.match(path) == params
        serving.append(function)
    assert len(serving) <= 1, (method, path, serving)
    if serving:
        expected = "poll"
        if path == "/services" or path.startswith("/services/"):
            expected = {"POST": "start", "DELETE": "stop"}.get(method, "poll")
        assert serving == [expected], (method, path, serving)
