"""Every variable settings.py reads is documented in .env.example (so none is forgotten)."""

import ast
import re
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parents[2]
READERS = {"env_str", "env_int", "env_bool", "env_size", "env_list", "env_url", "env_choice"}
ASSIGNMENT = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=")


def names_read_by_settings() -> set[str]:
    tree = ast.parse((BASE_DIR / "qbsite" / "settings.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in READERS:
            first = node.args[0] if node.args else None
            assert isinstance(first, ast.Constant) and isinstance(first.value, str), (
                f"settings.py line {node.lineno}: {node.func.id}() must name its variable"
                " with a string literal so that .env.example can be checked"
            )
            names.add(first.value)
    return names


def example_lines() -> list[str]:
    return (BASE_DIR / ".env.example").read_text().splitlines()


def comment_above(lines: list[str], name: str) -> str | None:
    """The comment of `NAME=` / `# NAME=`: comment lines above it in the same block
    (several variables may share one comment); None when the name is missing."""
    found = [i for i, line in enumerate(lines) if (m := ASSIGNMENT.match(line)) and m[1] == name]
    if not found:
        return None
    index = found[0]
    comment = []
    for line in reversed(lines[:index]):
        if not line.startswith("#"):
            break  # a blank line ends the block
        if not ASSIGNMENT.match(line):
            comment.append(line.lstrip("# ").strip("- "))
    return " ".join(reversed(comment))


def test_the_parser_finds_what_settings_reads():
    # Guards the AST walk itself: settings.py reads these today (SYSTEM_LOG_LEVEL spans lines).
    assert {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "KIS_APP_KEY", "SYSTEM_LOG_LEVEL"} <= (
        names_read_by_settings()
    )


@pytest.mark.parametrize("name", sorted(names_read_by_settings()))
def test_env_example_documents_every_setting_with_a_comment(name):
    comment = comment_above(example_lines(), name)
    assert comment is not None, f"{name} is read by qbsite/settings.py but not in .env.example"
    assert comment, f"{name} in .env.example has no comment saying what it is"


def test_env_example_sets_nothing_by_default():
    # Everything is commented out: a copied .env must not switch `make run` off its
    # embedded servers (DATABASE_URL / REDIS_URL) or change a default unasked.
    active = [line for line in example_lines() if re.match(r"^[A-Z][A-Z0-9_]*=", line)]
    assert active == []
