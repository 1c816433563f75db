"""The tail a failed start's message ends with: bounded, printable, without environment values."""

from __future__ import annotations

from pathlib import Path

from outpost.backends.output import LINE_CHARS, READ_BYTES, TAIL_CHARS, TAIL_LINES, clean_tail, file_tail, with_tail


def test_the_last_lines_within_both_bounds() -> None:
    assert clean_tail([f"line {i}" for i in range(100)]) == [f"line {i}" for i in range(100 - TAIL_LINES, 100)]
    wide = clean_tail(["x" * 1000] * 10)
    assert len(wide) == TAIL_CHARS // (LINE_CHARS + 4) and all(line.endswith("...") for line in wide)


def test_lines_with_an_environment_value_and_control_characters_go() -> None:
    lines = [
        "token abcdef123456 leaked",
        "abc\x1b[1mdef123\x1b[0m456 coloured",
        "user 7 and /",
        "\x00\x1b[2K",
        "\u202eok",
    ]
    assert clean_tail(lines, ["abcdef123456", "7", "/"]) == ["user 7 and /", "ok"]  # short values: not looked for


def test_a_large_file_is_read_from_its_end(tmp_path: Path) -> None:
    path = tmp_path / "output.log"
    path.write_text("first\n" + "filler\n" * (READ_BYTES // 7) + "last words\n")
    assert file_tail(path)[-1] == "last words" and "first" not in file_tail(path)
    assert file_tail(tmp_path / "missing") == []
    assert with_tail("it failed", []) == "it failed (no output to show)"
