"""The README stays short, and every relative link in the README, the CHANGELOG and docs/ reaches an
existing file and, with `#anchor`, a heading of that file (anchors as GitHub renders them)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", REPO / "CHANGELOG.md", *sorted((REPO / "docs").glob("*.md"))]
README_LIMIT_BYTES = 8 * 1024

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def prose(text: str) -> str:
    """The text without fenced code blocks, where '#' lines and brackets are code, not Markdown."""
    return FENCE.sub("", text)


def anchors(text: str) -> set[str]:
    """The ids GitHub gives a file's headings: lower case, punctuation dropped, spaces to hyphens,
    repeats numbered -1, -2, ..."""
    seen: dict[str, int] = {}
    ids = set()
    for title in HEADING.findall(prose(text)):
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        ids.add(slug if count == 0 else f"{slug}-{count}")
    return ids


def broken_links(page: Path, root: Path = REPO) -> list[str]:
    """Each relative link of `page` that misses, named by its target and the file it looked for under `root`."""
    problems = []
    for target in LINK.findall(INLINE_CODE.sub("", prose(page.read_text()))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: are not checked here
            continue
        path, _, anchor = target.partition("#")
        destination = (page.parent / path).resolve() if path else page
        if not destination.exists():
            problems.append(f"{target}: no such file {destination.relative_to(root)}")
        elif anchor and anchor not in anchors(destination.read_text()):
            problems.append(f"{target}: no heading #{anchor} in {destination.relative_to(root)}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_reaches_a_file_and_heading(page: Path) -> None:
    assert not broken_links(page)


def test_the_readme_stays_short() -> None:
    size = len((REPO / "README.md").read_bytes())
    assert size < README_LIMIT_BYTES, f"README.md is {size} bytes: move details to docs/"


def test_the_docs_index_lists_every_page() -> None:
    index = (REPO / "docs" / "README.md").read_text()
    listed = {target.partition("#")[0] for target in LINK.findall(index)}
    pages = {p.name for p in (REPO / "docs").glob("*.md")} - {"README.md"}
    assert pages <= listed, f"not in docs/README.md: {sorted(pages - listed)}"


def test_the_checker_finds_a_missing_file_and_a_missing_heading(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other page\n\n## `code`: and (punctuation)\n\n```\n# not a heading\n```\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md) [ok](other.md#code-and-punctuation) [ok](#a-title) [web](https://example.org/x)\n"
        "# A title\n"
        "[gone](missing.md) [no anchor](other.md#not-a-heading) `[in code](nowhere.md)`\n"
        "```\n[in a block](nowhere.md)\n```\n"
    )
    assert broken_links(page, root=tmp_path) == [
        "missing.md: no such file missing.md",
        "other.md#not-a-heading: no heading #not-a-heading in other.md",
    ]
