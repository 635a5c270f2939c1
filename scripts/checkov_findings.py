"""Hold checkov's findings to checkov-suppressions.yaml: exit 1 on a finding the file does not explain, or on an entry
no finding needs any more; print the counts either way.

Usage (make lint): checkov ... -o json > report.json
    python scripts/checkov_findings.py report.json checkov-suppressions.yaml
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml


def failed_checks(report_path: Path) -> list[tuple[str, str, str]]:
    """(check id, resource logical id, file) of every failed check in checkov's JSON report."""
    raw = json.loads(report_path.read_text(encoding="utf-8") or "[]")
    reports = raw if isinstance(raw, list) else [raw]
    found = []
    for report in reports:
        for check in report.get("results", {}).get("failed_checks", ()):
            logical_id = check["resource"].split(".", 1)[-1]
            found.append((check["check_id"], logical_id, check.get("file_path", "")))
    return found


def main(report: str, suppressions: str) -> int:
    entries = yaml.safe_load(Path(suppressions).read_text(encoding="utf-8")) or []
    explained = {(e["check"], r) for e in entries for r in e["resources"]}
    missing_reason = [e["check"] for e in entries if not str(e.get("reason", "")).strip()]
    findings = failed_checks(Path(report))
    unexplained = sorted({(c, r, f) for c, r, f in findings if (c, r) not in explained})
    stale = sorted(explained - {(c, r) for c, r, _ in findings})
    print(f"checkov: {len(findings)} findings, {len(findings) - len(unexplained)} explained in {suppressions}")
    for check, resource, path in unexplained:
        print(f"  unexplained: {check} on {resource} ({path})")
    for check, resource in stale:
        print(f"  stale suppression (no such finding any more): {check} on {resource}")
    for check in missing_reason:
        print(f"  suppression without a reason: {check}")
    return 1 if unexplained or stale or missing_reason else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
