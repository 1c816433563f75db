"""docs/backends.md documents every option of each backend's configuration section, with its default,
and nothing that is not an option: a new or renamed trait fails here until the page says what it does."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from traitlets.config import Configurable

from outpost.backends.kubernetes.manifests import KubernetesBackend
from outpost.backends.local import LocalProcessBackend

PAGE = Path(__file__).resolve().parents[2] / "docs" / "backends.md"
ROW = re.compile(r"^\| `(?:c\.\w+\.)?(\w+)` \| [^|]+ \| `([^`]*)` \|", re.MULTILINE)


def documented(section: str) -> dict[str, str]:
    """The option rows of the table under the heading `### `c.<section>``: name -> default as written."""
    text = PAGE.read_text()
    start = text.index(f"### `c.{section}`")
    end = text.find("\n#", start + 1)
    return dict(ROW.findall(text[start : end if end != -1 else len(text)]))


@pytest.mark.parametrize("options", [LocalProcessBackend, KubernetesBackend], ids=lambda cls: cls.__name__)
def test_every_option_is_documented_with_its_default(options: type[Configurable]) -> None:
    rows = documented(options.__name__)
    traits = options.class_traits(config=True)
    assert sorted(rows) == sorted(traits)
    for name, default in rows.items():
        assert ast.literal_eval(default) == traits[name].default(), name
