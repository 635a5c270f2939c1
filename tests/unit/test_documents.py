"""The repository's documents point only at documents it has: code, help texts, templates and the README cite
`docs/architecture.md §n` (a section that exists), never a document outside the repository (the team's design notes
included), and their relative links lead to files that exist."""

from __future__ import annotations

import os
import re
from pathlib import Path

from tests.conftest import ROOT

ARCHITECTURE = ROOT / "docs" / "architecture.md"
SKIPPED_DIRECTORIES = {
    ".git",
    ".venv",
    ".venv-sam",
    ".venv-checkov",
    ".aws-sam",
    ".pytest_cache",
    ".ruff_cache",
    "__pycache__",
    ".eic-guard",
}
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".json", ".toml", ".txt", ".in", ".sh", ".cfg", ".html"}
# Documents that exist only outside the repository: naming them sends a reader nowhere.
OUTSIDE = re.compile(r"\bDESIGN\b|DESIGN\.md|/work/(?:shared|coord|notes)|\bbrief-\d+|\bCOMMON\.md\b|\bSTATUS\.md\b")
SECTION = re.compile(r"§(\d+[a-z]?)")
# A run of section references after the document's name: "docs/architecture.md §2, §5" (across a wrapped comment).
CITED = re.compile(r"docs/architecture\.md(?:[\s#*/\"'(]|\\n)*§\d+[a-z]?(?:(?:,|,? and| or|-)\s*(?:#\s*)?§\d+[a-z]?)*")


def documents() -> list[Path]:
    """The repository's text files, without virtualenvs, build output and the real-data fixtures."""
    found = []
    for folder, directories, files in os.walk(ROOT):
        directories[:] = sorted(d for d in directories if d not in SKIPPED_DIRECTORIES and d != "fixtures")
        for name in sorted(files):
            path = Path(folder, name)
            if path.suffix in TEXT_SUFFIXES or name in ("Makefile", "LICENSE"):
                found.append(path)
    return found


def sections() -> set[str]:
    return set(re.findall(r"^## (\d+[a-z]?)\. ", ARCHITECTURE.read_text(encoding="utf-8"), re.M))


def test_no_document_outside_the_repository_is_named():
    # Given every text file of the repository (this test's own patterns aside)
    this = Path(__file__).resolve()

    # When looking for names of documents that live outside it
    found = [
        f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}"
        for path in documents()
        if path.resolve() != this
        for text in [path.read_text(encoding="utf-8", errors="replace")]
        for m in OUTSIDE.finditer(text)
    ]

    # Then there are none
    assert found == []


def test_every_section_reference_names_the_architecture_document_and_an_existing_section():
    # Given the sections docs/architecture.md has
    known = sections()
    assert {"2", "4", "5", "5b", "6", "9", "16"} <= known

    # When collecting, outside that document, every § and whether it follows "docs/architecture.md"
    bare, unknown = [], []
    for path in documents():
        if path == ARCHITECTURE or path.resolve() == Path(__file__).resolve():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        cited = {m.start() for c in CITED.finditer(text) for m in SECTION.finditer(text, c.start(), c.end())}
        for m in SECTION.finditer(text):
            where = f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, m.start()) + 1}"
            if m.start() not in cited:
                bare.append(f"{where}: {text[max(0, m.start() - 40) : m.end()]!r}")
            elif m.group(1) not in known:
                unknown.append(f"{where}: §{m.group(1)}")

    # Then each one cites docs/architecture.md, and a section it has
    assert bare == []
    assert unknown == []


def test_relative_links_of_the_markdown_documents_lead_to_files():
    # Given the Markdown documents' links that are not URLs or anchors
    broken = []
    for path in documents():
        if path.suffix != ".md":
            continue
        for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:|#", target):
                continue
            if not (path.parent / target.split("#")[0]).exists():
                broken.append(f"{path.relative_to(ROOT)}: {target}")

    # When / Then each leads to a file of the repository
    assert broken == []
