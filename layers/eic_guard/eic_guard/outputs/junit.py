"""The report as JUnit XML, the test report every CI system shows (`--format junit`).

One test suite per (account, region) target and one test case per (instance, check): `fail` and `would-fix` are
failures, `error` an error, `not-applicable` skipped, the rest pass; a warning is the test case's system-out, or,
when warnings fail the build (`--fail-on warning`), a failure of a case that would otherwise pass. An
excluded instance is one skipped case; a target that could not be scanned, one error case. Text from AWS (tags,
names) goes through the XML serializer, with the characters XML 1.0 cannot carry replaced.
"""

from __future__ import annotations

import re
from collections import Counter
from xml.etree import ElementTree

from .report import WARNING_CHECKS, InstanceEntry, Report, split_warning

_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
OUTCOMES = {"fail": "failure", "would-fix": "failure", "error": "error", "not-applicable": "skipped"}


def _text(value: str | None) -> str:
    return _NOT_XML.sub("\ufffd", value or "")


def _case(suite: ElementTree.Element, classname: str, name: str, outcome: str | None, message: str, body: str):
    """A test case; `outcome` (failure, error, skipped) or None for a pass."""
    case = ElementTree.SubElement(suite, "testcase", classname=_text(classname), name=_text(name), time="0")
    if outcome is not None:
        element = ElementTree.SubElement(case, outcome, message=_text(message))
        element.text = _text(body) or None
    return case


def _instance_cases(
    suite: ElementTree.Element, entry: InstanceEntry, counts: Counter[str], warnings_fail: bool
) -> None:
    classname = f"{entry.account_id}.{entry.region}.{entry.instance_id}"
    label = f" ({entry.name})" if entry.name else ""
    if not entry.checks:
        _case(suite, classname, f"excluded{label}", "skipped", entry.excluded_reason or "excluded", "")
        counts["skipped"] += 1
        return
    cases = {}
    for check_id, check in entry.checks.items():
        outcome = OUTCOMES.get(check.status)
        message = f"{check.status}: {check.reason or ''}"
        cases[check_id] = _case(suite, classname, f"{check_id}{label}", outcome, message, check.guidance or "")
        counts[outcome or "passed"] += 1
    for warning in entry.warnings:  # beside the check it is about (the first check's case when about none)
        check_id = WARNING_CHECKS.get(split_warning(warning)[0], "")
        case = cases.get(check_id, next(iter(cases.values())))
        if warnings_fail and len(case) == 0:  # a passing case: the warning is its failure
            ElementTree.SubElement(case, "failure", message=_text(f"warning: {warning}"))
            counts["failure"] += 1
            counts["passed"] -= 1
            continue
        output = case.find("system-out")
        if output is None:
            output = ElementTree.SubElement(case, "system-out")
        output.text = "\n".join(filter(None, (output.text, _text(f"warning: {warning}"))))


def render_junit(report: Report, *, warnings_fail: bool = False) -> str:
    """The JUnit XML document of one run (with its XML declaration); `warnings_fail`: see the module's docstring."""
    root = ElementTree.Element("testsuites", name=f"eic-guard {report.mode} {report.run_id}")
    totals: Counter[str] = Counter()
    for target in report.targets:
        name = f"{report.account_label(target.account_id)} {target.region}"
        suite = ElementTree.SubElement(root, "testsuite", name=_text(name), timestamp=report.started_at.isoformat())
        counts: Counter[str] = Counter()
        if target.error:
            _case(suite, f"{target.account_id}.{target.region}", "scan", "error", target.error, "")
            counts["error"] += 1
        for entry in sorted(report.instances, key=lambda e: e.instance_id):
            if (entry.account_id, entry.region) == (target.account_id, target.region):
                _instance_cases(suite, entry, counts, warnings_fail)
        _count(suite, counts)
        totals += counts
    _count(root, totals)
    ElementTree.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(root, encoding="unicode") + "\n"


def _count(element: ElementTree.Element, counts: Counter[str]) -> None:
    element.set("tests", str(sum(counts.values())))
    for outcome in ("failure", "error", "skipped"):
        element.set(f"{outcome}s" if outcome != "skipped" else "skipped", str(counts[outcome]))
    element.set("time", "0")
