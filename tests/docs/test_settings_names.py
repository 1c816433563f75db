"""Every `OUTPOST_*` name the docs mention is one the code reads: a field of `Settings` (or one of its
environment aliases), or one of the few names read outside it. A renamed or removed setting left in a
page (as `OUTPOST_TRUST_FORWARDED_FOR` was) fails here."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import AliasChoices

from outpost.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
NAME = re.compile(r"\bOUTPOST_[A-Z0-9_]*[A-Z0-9]\b")
# Read where no Settings exists yet, each with the file that reads it.
OUTSIDE_SETTINGS = {
    "OUTPOST_CONFIG": "lib/outpost/settings.py",  # which values file load_settings reads
    "OUTPOST_FUZZ_EXAMPLES": "tests/fuzz/harness.py",  # the fuzz tests' example count
}


def settings_names() -> set[str]:
    prefix = Settings.model_config.get("env_prefix", "")
    names = set()
    for field, info in Settings.model_fields.items():
        names.add(f"{prefix}{field}".upper())
        if isinstance(info.validation_alias, AliasChoices):
            names.update(str(choice) for choice in info.validation_alias.choices)
    return names


def unknown_names(text: str) -> set[str]:
    return set(NAME.findall(text)) - settings_names() - set(OUTSIDE_SETTINGS)


def test_every_outpost_name_in_the_docs_is_read_by_the_code() -> None:
    pages = [*sorted((ROOT / "docs").rglob("*.md")), ROOT / "README.md"]
    unknown = {str(page.relative_to(ROOT)): found for page in pages if (found := unknown_names(page.read_text()))}
    assert unknown == {}


def test_names_read_outside_the_settings_are_read_where_listed() -> None:
    for name, path in OUTSIDE_SETTINGS.items():
        assert f'"{name}"' in (ROOT / path).read_text(), (name, path)


def test_the_check_finds_a_removed_setting() -> None:
    text = "Behind Knative set `OUTPOST_TRUST_FORWARDED_FOR=true`; `OUTPOST_TRUSTED_PROXIES` and `OUTPOST_*`."
    assert unknown_names(text) == {"OUTPOST_TRUST_FORWARDED_FOR"}
    assert "OUTPOST_API_PORT" in settings_names() and "OUTPOST_CONFIG_FILE" in settings_names()
