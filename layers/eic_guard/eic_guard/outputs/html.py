"""A self-contained HTML page of one run: summary, failures by check (inline SVG chart), the instance table.

No external script, stylesheet or font: the page opens offline and can be attached to an audit. Its only URLs are
the guidance's AWS documentation links, which are followed when clicked, never loaded (`rel="noopener noreferrer"`).
Warnings are amber (`.warn`): a passing check with a warning reads `pass!` on amber, never green, and the warning's
text is listed under the instance's reasons; a `warnings` card counts the instances with one.
"""

from __future__ import annotations

from collections import Counter
from html import escape

from ..checks import CHECK_IDS
from .report import DOC_URL, SHORT_IDS, STATUS_LABEL, WARNING_CHECKS, Report, split_warning

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;margin:24px;color:#1b1f24;background:#fff}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px} .meta{color:#57606a;font-size:13px}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:16px 0}
.card{border:1px solid #d0d7de;border-radius:8px;padding:10px 16px;min-width:110px}
.card b{display:block;font-size:26px} .card span{font-size:12px;color:#57606a;text-transform:uppercase}
table{border-collapse:collapse;width:100%;font-size:13px} th,td{border:1px solid #d0d7de;padding:4px 8px;
text-align:left;vertical-align:top} th{background:#f6f8fa}
.pass{color:#1a7f37}.fail{color:#cf222e;font-weight:600}.fixed{color:#0969da}.would-fix{color:#9a6700}
.error{color:#8250df;font-weight:600}.not-applicable{color:#8c959f}
.v-compliant{background:#dafbe1}.v-fixed{background:#ddf4ff}.v-noncompliant{background:#ffebe9}
.v-excluded{background:#f6f8fa}.v-error{background:#fbefff} ul{margin:0;padding-left:18px}
td.warn,li.warn,.card.warn{background:#fff8c5;color:#9a6700} td.warn{font-weight:600} .card.warn{border-color:#d4a72c}
.card.warn span{color:#9a6700} .guidance{color:#57606a;margin-top:2px} .nowrap{white-space:nowrap}
.reasons{overflow-wrap:anywhere;min-width:320px} .owner{color:#57606a;font-size:12px}
.who{overflow-wrap:anywhere;min-width:90px} td.check{text-align:center;white-space:nowrap}
"""
AMBER_BACKGROUND = "#fff8c5"
# The chart's colours: still failing or in error red (the page's .fail); would-fix amber (the page's .would-fix).
CHART_COLOURS = {"fail": "#cf222e", "error": "#8250df", "would-fix": "#bf8700"}


def failures_by_check(report: Report) -> Counter[str]:
    """How many instances each check still fails (fail, would-fix or error) after this run."""
    return Counter({check_id: sum(counts.values()) for check_id, counts in failures_by_status(report).items()})


def failures_by_status(report: Report) -> dict[str, Counter[str]]:
    """Per check, in check order, how many instances still fail it, by status (fail, would-fix, error)."""
    counts: dict[str, Counter[str]] = {check_id: Counter() for check_id in CHECK_IDS}
    for entry in report.instances:
        for check_id, check in entry.checks.items():
            if check.status in CHART_COLOURS and check_id in counts:
                counts[check_id][check.status] += 1
    return counts


def _chart(counts: dict[str, Counter[str]]) -> str:
    """One stacked bar per check: red what fails or errs (a person is needed), amber what would be fixed (report
    mode: remediate mode fixes it), so a report-mode run does not look worse than it is."""
    width, bar_height, label_width = 640, 26, 150
    top = max((sum(c.values()) for c in counts.values()), default=0) or 1
    rows = []
    for index, (check_id, by_status) in enumerate(counts.items()):
        y, x = index * (bar_height + 8), label_width
        total = sum(by_status.values())
        bars = []
        for status, colour in CHART_COLOURS.items():
            length = int((width - label_width - 140) * by_status[status] / top)
            if length:
                bars.append(
                    f'<rect class="{status}" x="{x}" y="{y}" width="{length}" height="{bar_height}" '
                    f'fill="{colour}" rx="3"><title>{by_status[status]} {status}</title></rect>'
                )
            x += length
        if not bars:  # a sliver, so the row reads as zero rather than missing
            bars.append(f'<rect x="{x}" y="{y}" width="1" height="{bar_height}" fill="#cf222e" rx="3"/>')
        planned = f" ({by_status['would-fix']} would-fix)" if by_status["would-fix"] else ""
        rows.append(
            f'<g><text x="0" y="{y + 18}" font-size="13">{escape(check_id)}</text>{"".join(bars)}'
            f'<text x="{max(x, label_width + 1) + 6}" y="{y + 18}" font-size="13">{total}{planned}</text></g>'
        )
    height = len(counts) * (bar_height + 8)
    return (
        f'<svg role="img" aria-label="failures by check" width="{width}" height="{height}" '
        f'xmlns="http://www.w3.org/2000/svg">{"".join(rows)}</svg>'
    )


def linked(text: str) -> str:
    """`text` escaped, its https URLs as links that open apart from the page (no opener, no referrer)."""
    parts, last = [], 0
    for match in DOC_URL.finditer(text):
        url = match.group().rstrip(".,;:")
        parts.append(escape(text[last : match.start()]))
        parts.append(f'<a href="{escape(url, quote=True)}" rel="noopener noreferrer">{escape(url)}</a>')
        last = match.start() + len(url)
    parts.append(escape(text[last:]))
    return "".join(parts)


def _who(name: str | None, tags: dict[str, str]) -> str:
    """The name cell: the Name tag, the owner tags under it (one a line)."""
    owner = "<br>".join(f"{escape(key)}={escape(value)}" for key, value in tags.items())
    return f'<div class="name">{escape(name or "")}</div>' + (f'<div class="owner">{owner}</div>' if owner else "")


def _instance_rows(entries: list) -> str:
    rows = []
    for entry in sorted(entries, key=lambda e: (e.region, e.instance_id)):
        warned = {WARNING_CHECKS.get(split_warning(w)[0]) for w in entry.warnings}
        verdict_class = " warn" if None in warned else ""  # a warning about no check column (an unknown code)
        cells = []
        for check_id in CHECK_IDS:
            check = entry.checks.get(check_id)
            if check is None:
                cells.append("<td></td>")
                continue
            title = escape(check.reason or "", quote=True)
            label, classes = STATUS_LABEL[check.status], check.status
            if check_id in warned:
                label, classes = f"{label}!", f"{classes} warn"
            cells.append(f'<td class="check {classes}" title="{title}">{label}</td>')
        notes = [f"<li>{escape(entry.excluded_reason)}</li>"] if entry.excluded_reason else []
        for cid, c in entry.checks.items():
            if c.status in ("pass", "not-applicable"):
                continue
            guidance = f'<div class="guidance">what to do: {linked(c.guidance)}</div>' if c.guidance else ""
            notes.append(f"<li><b>{escape(cid)}</b>: {escape(c.reason or '')}{guidance}</li>")
        notes += [f'<li class="warn">warning: {escape(w)}</li>' for w in entry.warnings]
        notes += [
            f"<li>{escape(a.status)}: {escape(a.action)} {escape(a.resource)} — {escape(a.detail)}</li>"
            for a in entry.actions
        ]
        rows.append(
            f'<tr class="v-{entry.verdict}"><td class="nowrap">{escape(entry.instance_id)}</td>'
            f'<td class="who">{_who(entry.name, entry.tags)}</td>'
            f'<td class="nowrap">{escape(entry.region)}<br>{escape(entry.vpc_id or "")}</td>'
            f'<td class="nowrap{verdict_class}">{entry.verdict}</td>{"".join(cells)}'
            f'<td class="reasons"><ul>{"".join(notes)}</ul></td></tr>'
        )
    return "".join(rows)


def _accounts_table(report: Report) -> str:
    """One row per account: its targets' statuses and its instances' verdicts (organization runs)."""
    rows = []
    for account in report.accounts:
        targets = [t for t in report.targets if t.account_id == account]
        entries = [e for e in report.instances if e.account_id == account]
        verdicts = Counter(e.verdict for e in entries)
        warned = sum(1 for e in entries if e.warnings)
        warned_class = ' class="warn"' if warned else ""
        problems = "; ".join(f"{t.region}: {t.error}" for t in targets if t.error)
        rows.append(
            f'<tr><td><a href="#account-{escape(account, quote=True)}">{escape(report.account_label(account))}</a>'
            f"</td><td>{sum(t.status == 'ok' for t in targets)}/{len(targets)}</td>"
            f"<td>{len(entries)}</td><td>{verdicts['compliant']}</td><td>{verdicts['fixed']}</td>"
            f"<td>{verdicts['noncompliant']}</td><td>{verdicts['error']}</td>"
            f"<td{warned_class}>{warned}</td><td>{escape(problems)}</td></tr>"
        )
    return (
        "<h2>Accounts</h2><table><thead><tr><th>account</th><th>regions ok</th><th>instances</th><th>compliant</th>"
        "<th>fixed</th><th>noncompliant</th><th>errors</th><th>warnings</th><th>target errors</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _instance_tables(report: Report) -> str:
    """The instance table, one per account when the run covered several (grouped by account)."""
    # Short check ids (the full id is the tooltip): six full ids would push the reasons off a 1280 px screen.
    headers = "".join(f'<th title="{escape(c)}">{escape(SHORT_IDS.get(c, c))}</th>' for c in CHECK_IDS)
    head = (
        "<table><thead><tr><th>instance</th><th>name / owner</th><th>region / vpc</th><th>verdict</th>"
        f"{headers}<th>reasons, what to do, actions</th></tr></thead><tbody>"
    )
    if len(report.accounts) <= 1:
        return f"<h2>Instances</h2>\n{head}{_instance_rows(report.instances)}</tbody></table>"
    sections = []
    for account in report.accounts:
        entries = [e for e in report.instances if e.account_id == account]
        sections.append(
            f'<h2 id="account-{escape(account, quote=True)}">Instances in account '
            f"{escape(report.account_label(account))} ({len(entries)})</h2>\n"
            f"{head}{_instance_rows(entries)}</tbody></table>"
        )
    return "\n".join(sections)


def _notes(report: Report) -> str:
    """Target notes (not errors: e.g. a near-miss of the opt-in tag), amber."""
    items = "".join(
        f'<li class="warn">{escape(report.account_label(t.account_id))} / {escape(t.region)}: {escape(note)}</li>'
        for t in report.targets
        for note in t.notes
    )
    return f"<h2>Notes</h2><ul>{items}</ul>" if items else ""


def render_html(report: Report) -> str:
    """The whole page as one string."""
    s = report.summary
    cards = "".join(
        f'<div class="{css}"><b>{value}</b><span>{label}</span></div>'
        for label, value, css in (
            ("instances", s.instances, "card"),
            ("compliant", s.compliant, "card"),
            ("fixed", s.fixed, "card"),
            ("noncompliant", s.noncompliant, "card"),
            ("excluded", s.excluded, "card"),
            ("errors", s.errors, "card"),
            ("warnings", s.warnings, "card warn" if s.warnings else "card"),
        )
    )
    target_errors = "".join(
        f"<li>{escape(report.account_label(e.account_id))} / {escape(e.region)}: {escape(e.error)}</li>"
        for e in report.target_errors
    )
    accounts = (
        ("accounts " + ", ".join(report.account_label(a) for a in report.accounts))
        if len(report.accounts) > 1
        else f"account {report.account_label(report.account_id)}"
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>eic-guard {report.mode}-mode run {escape(report.run_id)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_STYLE}</style></head>
<body>
<h1>eic-guard {report.mode}-mode run</h1>
<div class="meta">run {escape(report.run_id)} · {escape(accounts)} · regions
{escape(", ".join(report.regions))} · {report.started_at.isoformat()} → {report.finished_at.isoformat()}
· ip-ranges {escape(report.ip_ranges.sync_token)} ({escape(report.ip_ranges.create_date)})</div>
<div class="cards">{cards}</div>
{f"<h2>Targets that could not be scanned</h2><ul>{target_errors}</ul>" if target_errors else ""}
{_notes(report)}
{_accounts_table(report) if len(report.accounts) > 1 else ""}
<h2>Failures by check</h2>
<div class="meta">instances that still fail each check: <span class="fail">fail</span>, <span class="error">error</span>
(could not be checked), <span class="would-fix">would-fix</span> (remediate mode fixes it)</div>
{_chart(failures_by_status(report))}
{_instance_tables(report)}
</body></html>
"""
