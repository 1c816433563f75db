"""Unknown configuration keys: which keys the model at that place accepts, and the closest one to suggest."""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel


def camel(name: str) -> str:
    """`ssh_public_keys` -> `sshPublicKeys`, as the YAML (the Helm values) writes settings."""
    first, *rest = name.split("_")
    return first + "".join(part.title() for part in rest)


def did_you_mean(written: str, accepted: Iterable[str]) -> str:
    """'; did you mean X?' for the closest accepted key, or '' when none is close."""
    close = difflib.get_close_matches(written, sorted(set(accepted)), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def accepted_keys(model: type[BaseModel]) -> set[str]:
    """Every key `model` reads: each field's alias and, where names populate too, its name."""
    keys = set()
    for name, info in model.model_fields.items():
        if info.exclude:
            continue
        if info.alias:
            keys.add(info.alias)
        if not info.alias or model.model_config.get("populate_by_name"):
            keys.add(name)
    return keys


def _model_in(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The model an annotation holds, and whether a mapping key comes first (`dict[str, Model]`)."""
    origin = typing.get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    if origin is dict:
        return _model_in(typing.get_args(annotation)[1])[0], True
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found, keyed = _model_in(arg)
            if found is not None:
                return found, keyed
    return None, False


def model_at(root: type[BaseModel], loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The model whose keys appear at `loc` (the path of a validation error, without its last part)."""
    model: type[BaseModel] | None = root
    parts = list(loc)
    while parts and model is not None:
        part = parts.pop(0)
        field = next((f for n, f in model.model_fields.items() if part in (n, f.alias)), None)
        if field is None:
            return None
        model, keyed = _model_in(field.annotation)
        if keyed:
            if not parts:
                return None
            parts.pop(0)
    return model


def unknown_key(root: type[BaseModel], loc: Sequence[str | int], written: str) -> str:
    """'unknown key' plus the suggestion among the keys the model at `loc` accepts."""
    model = model_at(root, loc)
    accepted = accepted_keys(model) if model is not None else set()
    if model is root:
        accepted |= {camel(key) for key in accepted}
    return f"unknown key{did_you_mean(written, accepted)}"
