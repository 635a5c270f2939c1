"""The generated reference (cli/reference.py): the README's tables are what `make docs` would write now, and
`eic-guard scan --help` lists the settings a CLI user sets."""

from __future__ import annotations

import pytest
from eic_guard.cli import main
from eic_guard.cli.reference import BLOCK, rewritten

from tests.conftest import ROOT

README = ROOT / "README.md"


def test_the_readmes_generated_tables_are_current():
    # Given the README
    text = README.read_text(encoding="utf-8")

    # When its generated blocks are generated again from the settings model and the exit codes
    # Then nothing changes (run `make docs` after changing a setting or an exit code)
    assert {m.group("name") for m in BLOCK.finditer(text)} == {"settings", "scan-exit-codes", "verify-exit-codes"}
    assert rewritten(text) == text


def test_a_stale_block_is_rewritten_and_the_rest_kept(tmp_path):
    # Given a document whose settings block is stale
    path = tmp_path / "doc.md"
    path.write_text("before\n<!-- generated: settings (make docs) -->\nold\n<!-- end generated -->\nafter\n")

    # When checking, then rewriting it
    from eic_guard.cli.reference import main as reference

    assert reference(["--check", str(path)]) == 1
    assert reference([str(path)]) == 0

    # Then the block holds the table, and the text around it is unchanged
    text = path.read_text()
    assert text.startswith("before\n<!-- generated: settings (make docs) -->\n| variable |")
    assert text.endswith("<!-- end generated -->\nafter\n")
    assert "| `EIC_GUARD_TAG_KEY` | `TagKey` | `--tag KEY=VALUE` | `eic-guard:managed` |" in text
    assert reference(["--check", str(path)]) == 0


def test_scan_help_lists_the_settings_and_the_exit_codes(capsys):
    # When asking for the scan's help
    with pytest.raises(SystemExit) as exited:
        main(["scan", "--help"])

    # Then it lists each setting a CLI user sets with its flag and default, and every exit code
    out = capsys.readouterr().out
    assert exited.value.code == 0
    assert "  EIC_GUARD_TAG_KEY (--tag KEY=VALUE, default eic-guard:managed)" in out
    assert "  EIC_GUARD_REMEDIATE_PUBLIC_IP (default false)" in out
    assert "  EIC_GUARD_STATE_FILE (--state-file, default ~/.eic-guard/state.json)" in out
    assert "EIC_GUARD_STATE_TABLE" not in out  # the stack's own: in the README
    for code in ("0", "1", "2", "3", "4", "130"):
        assert f"\n  {code:<4}" in out
