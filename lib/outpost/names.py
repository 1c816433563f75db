"""Kubernetes-safe names: slugs that are always valid and never collide, and KubeSpawner's templates.

A name that is already valid is kept as it is; anything else becomes `<readable part>---<hash>`,
so two different inputs never share a slug. Slugs equal KubeSpawner's "safe" scheme, so an
administrator's `pod_name_template` names the same pods it named under KubeSpawner.
"""

from __future__ import annotations

import hashlib
import re
import string
from collections.abc import Callable, Mapping, Sequence

HASH_LENGTH = 8
OBJECT_NAME_MAX = 63  # a DNS-1035 label: a Service's name, and so our pods' names
LABEL_VALUE_MAX = 63
_PART_MAX = 48  # one user or server name inside a template (KubeSpawner's budget)
TEMPLATE_FIELDS_MAX = 16  # placeholders in one template: bounds what rendering it can allocate

_LOWER = frozenset(string.ascii_lowercase)
_LOWER_ALNUM = frozenset(string.ascii_lowercase + string.digits)
_ALNUM = frozenset(string.ascii_letters + string.digits)
_OBJECT_CHARS = re.compile(r"[a-z0-9-]+")
_LABEL_CHARS = re.compile(r"[A-Za-z0-9._-]+")
_NOT_LOWER_ALNUM = re.compile(r"[^a-z0-9]+")
# A label or annotation key: optional DNS-subdomain prefix, then a name of at most 63 characters.
_KEY_PREFIX = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_KEY_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")


def is_object_name(value: str) -> bool:
    """A DNS-1035 label: valid as the name of any object, a Service included."""
    return (
        0 < len(value) <= OBJECT_NAME_MAX
        and value[0] in _LOWER
        and value[-1] in _LOWER_ALNUM
        and _OBJECT_CHARS.fullmatch(value) is not None
    )


def is_label_value(value: str) -> bool:
    if not value:
        return True
    return (
        len(value) <= LABEL_VALUE_MAX
        and value[0] in _ALNUM
        and value[-1] in _ALNUM
        and _LABEL_CHARS.fullmatch(value) is not None
    )


def is_qualified_key(key: str) -> bool:
    """A label or annotation key such as `hub.jupyter.org/username`."""
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or _KEY_PREFIX.fullmatch(prefix) is None):
        return False
    return 0 < len(name) <= 63 and _KEY_NAME.fullmatch(name) is not None


def _readable(name: str, max_length: int) -> str:
    """Lowercase letters, digits and single hyphens; starts with a letter; never empty."""
    text = _NOT_LOWER_ALNUM.sub("-", name.lower()).lstrip("-")[:max_length].rstrip("-")
    if text and text[0] not in _LOWER:
        text = "x-" + text[: max_length - 2]
    return text or "x"


def hashed_slug(name: str, max_length: int = 32) -> str:
    """`<readable>---<hash>`: valid for any input; '---' cannot come out of a valid name's template."""
    room = max_length - HASH_LENGTH - 3
    if room < 1:
        raise ValueError(f"a hashed slug needs at least {HASH_LENGTH + 4} characters")
    digest = hashlib.sha256(name.encode()).hexdigest()[:HASH_LENGTH]
    return f"{_readable(name, room)}---{digest}"


def safe_slug(name: str, max_length: int | None = None, valid: Callable[[str], bool] = is_object_name) -> str:
    """The name itself when valid (and short enough), else a hashed slug.

    A name containing '--' is always hashed: it could otherwise equal a `{user}--{server}` join.
    """
    if "--" not in name and valid(name) and (max_length is None or len(name) <= max_length):
        return name
    return hashed_slug(name, max_length or 32)


def multi_slug(names: Sequence[str], max_length: int = _PART_MAX) -> str:
    """`<a>--<b>---<hash>`, one hash over all parts (0xFF separates them: it never occurs in UTF-8)."""
    digest = hashlib.sha256(b"\xff".join(n.encode() for n in names)).hexdigest()[:HASH_LENGTH]
    per_part = (max_length - HASH_LENGTH - 1) // len(names) - 2
    if per_part < 2:
        raise ValueError(f"{max_length} characters cannot hold {len(names)} names")
    return "--".join(_readable(n, per_part) for n in names) + f"---{digest}"


def label_value(value: str) -> str:
    """Any text as a label value (labels select; the exact text goes into an annotation)."""
    return safe_slug(value, LABEL_VALUE_MAX, is_label_value)


def object_name(rendered: str) -> str:
    """A rendered template as a Service-safe object name; hashed if the template produced junk."""
    return rendered if is_object_name(rendered) else hashed_slug(rendered, OBJECT_NAME_MAX)


def template_fields(user: str, user_id: str, server_name: str) -> dict[str, str]:
    """The fields KubeSpawner's templates know about a user's server ("safe" slug scheme)."""
    user_slug = safe_slug(user, _PART_MAX)
    server_slug = safe_slug(server_name, _PART_MAX) if server_name else ""
    if len(user_slug) + len(server_slug) + 2 > _PART_MAX:
        user_server = multi_slug([user, server_name])
    else:
        user_server = f"{user_slug}--{server_slug}" if server_name else user_slug
    return {
        "userid": user_id,
        "unescaped_username": user,
        "unescaped_servername": server_name,
        "username": user_slug,
        "servername": server_slug,
        "user_server": user_server,
        "safe_username": user_slug,
        "safe_servername": server_slug,
        "safe_user_server": user_server,
    }


def template_fields_used(template: str) -> list[str]:
    """The fields a template names; ValueError unless it is text and plain `{field}` placeholders.

    A hub's template is data: attribute or index access (`{name.__class__}`), conversions and format
    specs (`{name:>999999999}` allocates a gigabyte) would make `str.format` run the hub's expressions.
    """
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:  # an unmatched brace
        raise ValueError(f"{exc}; write a literal brace as '{{{{' or '}}}}'") from None
    placeholders = [(field, spec, conversion) for _, field, spec, conversion in parsed if field is not None]
    if any(not field.isidentifier() or spec or conversion for field, spec, conversion in placeholders):
        raise ValueError("only plain {field} placeholders are allowed: no attributes, indexes, conversions or formats")
    if len(placeholders) > TEMPLATE_FIELDS_MAX:
        raise ValueError(f"more than {TEMPLATE_FIELDS_MAX} placeholders")
    return [field for field, _, _ in placeholders]


def expand(template: str, fields: Mapping[str, str]) -> str:
    """Fill a template; a trailing '-' left by an empty server name goes (as in KubeSpawner)."""
    known = ", ".join("{" + key + "}" for key in sorted(fields))
    try:
        unknown = sorted(set(template_fields_used(template)) - set(fields))
    except ValueError as exc:
        raise ValueError(f"cannot expand {template!r}: {exc}") from None
    if unknown:
        raise ValueError(f"cannot expand {template!r}: unknown fields {', '.join(unknown)}; known fields: {known}")
    rendered = template.format(**fields)
    return rendered if template.endswith("-") else rendered.rstrip("-")


def is_service_host(host: str, service: str, namespace: str, cluster_domain: str, *, short: bool) -> bool:
    """Whether `host` names that Service: `<service>.<namespace>[.svc[.<cluster_domain>]]`, any case, with or
    without the root's trailing dot. `short` admits the bare `<service>`, which resolves in the namespace of
    whoever looks it up: only right when that is the Service's own."""
    wanted = [f"{service}.{namespace}", f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.{cluster_domain}"]
    if short:
        wanted.append(service)
    return dns_key(host) in {dns_key(name) for name in wanted}


def dns_key(host: str) -> str:
    """A host name as DNS compares it: any case, and the root's trailing dot implied."""
    return host.lower().removesuffix(".")
