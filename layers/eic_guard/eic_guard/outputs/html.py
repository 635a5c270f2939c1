"""A self-contained HTML page of one run, usable at 100,000 instances (docs/architecture.md §15).

What a person needs first comes first: the counts, the targets that could not be scanned, then the summaries by
account (worst first), region, check and connect path, the failures chart, and only then the instances, failures
before passes, with a filter (text, verdict, account, region, failing check, warnings) and sortable columns.

The instances travel as compact JSON in `<script type="application/json">` data islands, drawn 100 rows at a time by
one inline script, so a 100,000-instance page stays near 20 MB and opens in a second; a DOM of 100,000 table rows
would not. The data islands come before the visible content in the file (they are not displayed), so a writer can
stream the instances while it reads the targets and write the summaries, which need every count, last.

No external script, stylesheet, font or image: the page opens offline and can be attached to an audit. A
Content-Security-Policy meta tag allows exactly the page's own style and script (by hash) and nothing else, so even
a tampered report cannot load anything. The script builds every cell with `textContent` (data is never parsed as
markup); its only links are the guidance's https documentation URLs, opened without opener or referrer.
Warnings are amber (`.warn`): a passing check with a warning reads `pass!` on amber, never green.

Beyond PAGE_INSTANCES instances, `render_pages` writes the summary page without instances and one page per account,
linked from the accounts table.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from html import escape

from ..checks import CHECK_IDS, check_ids_for
from .report import DOC_URL, SHORT_IDS, STATUS_LABEL, WARNING_CHECKS, InstanceEntry, Report, Summary, path_counts

PAGE_INSTANCES = 100_000  # beyond this, one page per account (a 100,000-instance page is ~20 MB)
ROWS_PER_SCREEN = 100
ACCOUNTS_SHOWN = 25  # accounts table rows before "the other N accounts"
# Verdicts in the order a person should read them: what needs them first.
VERDICT_ORDER = ("error", "noncompliant", "fixed", "compliant", "excluded")
STATUS_CODES = {"pass": "p", "fail": "F", "fixed": "x", "would-fix": "w", "error": "E", "not-applicable": "n"}
NOT_PASSING = ("fail", "would-fix", "error")

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;margin:24px;color:#1b1f24;background:#fff}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px} .meta{color:#57606a;font-size:13px}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:16px 0}
.card{border:1px solid #d0d7de;border-radius:8px;padding:10px 16px;min-width:110px}
.card b{display:block;font-size:26px} .card span{font-size:12px;color:#57606a;text-transform:uppercase}
table{border-collapse:collapse;width:100%;font-size:13px} th,td{border:1px solid #d0d7de;padding:4px 8px;
text-align:left;vertical-align:top} th{background:#f6f8fa} td.n{text-align:right} table.sum{width:auto}
.summaries{display:flex;gap:24px;flex-wrap:wrap;align-items:flex-start} .summaries>div{max-width:100%;overflow-x:auto}
.pass{color:#1a7f37}.fail{color:#cf222e;font-weight:600}.fixed{color:#0969da}.would-fix{color:#9a6700}
.error{color:#8250df;font-weight:600}.not-applicable{color:#8c959f}
.v-compliant{background:#dafbe1}.v-fixed{background:#ddf4ff}.v-noncompliant{background:#ffebe9}
.v-excluded{background:#f6f8fa}.v-error{background:#fbefff} ul{margin:0;padding-left:18px}
td.warn,li.warn,.card.warn{background:#fff8c5;color:#9a6700} td.warn{font-weight:600} .card.warn{border-color:#d4a72c}
.card.warn span{color:#9a6700} .guidance{color:#57606a;margin-top:2px} .nowrap{white-space:nowrap}
.reasons{overflow-wrap:anywhere;min-width:320px} .owner{color:#57606a;font-size:12px}
.who{overflow-wrap:anywhere;min-width:90px} td.check{text-align:center;white-space:nowrap}
#filters{display:flex;gap:8px;flex-wrap:wrap;align-items:center;margin:8px 0;font-size:13px}
#filters input[type=search]{min-width:260px} #pager{margin:8px 0;font-size:13px}
th[data-sort]{cursor:pointer} th[aria-sort=ascending]::after{content:" \\25b2"}
th[aria-sort=descending]::after{content:" \\25bc"}
"""
AMBER_BACKGROUND = "#fff8c5"
# The chart's colours: still failing or in error red (the page's .fail); would-fix amber (the page's .would-fix).
CHART_COLOURS = {"fail": "#cf222e", "error": "#8250df", "would-fix": "#bf8700"}

# Draws the instance table from the data islands: filter, sort, 100 rows a screen. Cells are made with textContent.
_SCRIPT = r"""
(() => {
const island = (id) => JSON.parse(document.getElementById(id).textContent);
const meta = island("eic-meta"), raw = island("eic-rows"), str = island("eic-strings");
const STATUS = {p: "pass", F: "fail", x: "fixed", w: "would-fix", E: "error", n: "not-applicable", "-": ""};
const RANK = Object.fromEntries(meta.verdicts.map((v, i) => [v, i]));
const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => { const e = document.createElement(tag);
  if (cls) e.className = cls; if (text !== undefined) e.textContent = text; return e; };
const URL_RE = /https:\/\/[^\s<>"')\]]+/g;
const linked = (parent, text) => { let last = 0;
  for (const m of text.matchAll(URL_RE)) { const url = m[0].replace(/[.,;:]+$/, "");
    parent.append(text.slice(last, m.index));
    const a = el("a", "", url); a.href = url; a.rel = "noopener noreferrer"; parent.append(a);
    last = m.index + url.length; }
  parent.append(text.slice(last)); };
const s = (i) => (i >= 0 ? str[i] : "");
// A raw row: [account, region, instance, name, [tag], vpc, verdict, statuses, [[check, reason, guidance]], [warning],
// [[status, action, resource, detail]], excluded, path, connect command]; numbers index the strings island (-1: none).
const rows = raw.map((r) => ({account: s(r[0]), region: s(r[1]), id: r[2], name: r[3] || "",
  tags: (r[4] || []).map(s), vpc: s(r[5] ?? -1), verdict: meta.verdicts[r[6]], statuses: r[7],
  details: (r[8] || []).map(([c, reason, g]) => [c, s(reason), s(g)]), warnings: (r[9] || []).map(s),
  actions: (r[10] || []).map(([st, action, resource, detail]) => [s(st), s(action), resource, s(detail)]),
  excluded: s(r[11] ?? -1), path: s(r[12] ?? -1), command: r[13] || ""}));
const label = (account) => meta.labels[account] || account;
let haystacks = null;
const haystack = (r) => [label(r.account), r.region, r.id, r.name, ...r.tags, r.vpc, r.verdict,
  ...r.details.map((d) => meta.checks[d[0]] + " " + d[1]), ...r.warnings, r.excluded].join(" ").toLowerCase();
const state = {q: "", verdict: "", account: "", region: "", check: "", warned: false, sort: "", dir: 1, page: 0};
const SEVERITY = "EFwxpn-";
const keys = {where: (r) => label(r.account) + " " + r.region + " " + r.vpc, instance: (r) => r.id,
  name: (r) => r.name, verdict: (r) => RANK[r.verdict]};
const by = (x, y) => (x < y ? -1 : x > y ? 1 : 0);
const compare = (a, b) => {
  if (state.sort) { const key = state.sort.startsWith("check")
      ? (r) => SEVERITY.indexOf(r.statuses[+state.sort.slice(5)]) : keys[state.sort];
    const order = by(key(a), key(b)); if (order) return order * state.dir; }
  return RANK[a.verdict] - RANK[b.verdict] || by(a.account, b.account) || by(a.region, b.region) || by(a.id, b.id); };
let shown = rows.slice().sort(compare);
const keep = (r, q) => (!state.verdict || (state.verdict === "attention"
    ? r.verdict === "noncompliant" || r.verdict === "error" : r.verdict === state.verdict))
  && (!state.account || r.account === state.account) && (!state.region || r.region === state.region)
  && (state.check === "" || "FwE".includes(r.statuses[+state.check])) && (!state.warned || r.warnings.length > 0)
  && (!q || haystacks.get(r).includes(q));
const apply = () => {
  const q = state.q.trim().toLowerCase();
  if (q && !haystacks) haystacks = new Map(rows.map((r) => [r, haystack(r)]));
  shown = rows.filter((r) => keep(r, q)); shown.sort(compare); state.page = 0; draw(); };
const drawRow = (r) => {
  const tr = el("tr", "v-" + r.verdict);
  const where = el("td", "nowrap"); where.append(label(r.account), el("br"), r.region, el("br"), r.vpc);
  if (r.path) where.append(el("br"), el("span", "path", "path " + r.path));
  const who = el("td", "who"); who.append(el("div", "name", r.name));
  if (r.tags.length) { const owner = el("div", "owner");
    r.tags.forEach((t, i) => { if (i) owner.append(el("br")); owner.append(t); }); who.append(owner); }
  const warnedChecks = new Set(r.warnings.map((w) => meta.warning_checks[w.split(": ")[0]] ?? -1));
  const verdict = el("td", warnedChecks.has(-1) ? "nowrap warn" : "nowrap", r.verdict);
  tr.append(where, el("td", "nowrap", r.id), who, verdict);
  const reasonOf = Object.fromEntries(r.details.map(([c, reason]) => [c, reason]));
  meta.checks.forEach((c, i) => { const status = STATUS[r.statuses[i]], warned = warnedChecks.has(i);
    if (!status) { tr.append(el("td")); return; }
    const text = meta.status_labels[status] + (warned ? "!" : "");
    const cell = el("td", "check " + status + (warned ? " warn" : ""), text);
    if (reasonOf[i]) cell.title = reasonOf[i];
    tr.append(cell); });
  const notes = el("ul");
  if (r.excluded) notes.append(el("li", "", r.excluded));
  for (const [c, reason, guidance] of r.details) {
    const li = el("li"); li.append(el("b", "", meta.checks[c] ?? "?"), ": " + reason);
    if (guidance) { const div = el("div", "guidance", "what to do: "); linked(div, guidance); li.append(div); }
    notes.append(li); }
  for (const w of r.warnings) notes.append(el("li", "warn", "warning: " + w));
  for (const [status, action, resource, detail] of r.actions)
    notes.append(el("li", "", status + ": " + action + " " + resource + " \u2014 " + detail));
  if (r.command) {
    const li = el("li", "connect", "connect: "); li.append(el("code", "", r.command)); notes.append(li); }
  const reasons = el("td", "reasons"); reasons.append(notes); tr.append(reasons);
  return tr; };
const draw = () => {
  const body = $("instances").tBodies[0], size = meta.rows_per_screen;
  const pages = Math.max(1, Math.ceil(shown.length / size));
  state.page = Math.min(Math.max(state.page, 0), pages - 1);
  const start = state.page * size, slice = shown.slice(start, start + size);
  body.replaceChildren(...slice.map(drawRow));
  $("count").textContent = shown.length ? `instances ${start + 1}\u2013${start + slice.length} of ${shown.length}`
    + (shown.length < rows.length ? ` (filtered from ${rows.length})` : "") : `no instance matches (of ${rows.length})`;
  $("prev").disabled = state.page === 0; $("next").disabled = state.page >= pages - 1;
  for (const th of $("instances").tHead.rows[0].cells) {
    if (th.dataset.sort && th.dataset.sort === state.sort) {
      th.setAttribute("aria-sort", state.dir > 0 ? "ascending" : "descending"); }
    else th.removeAttribute("aria-sort"); } };
const options = (select, values) => { for (const [value, text] of values) {
  const o = el("option", "", text); o.value = value; select.append(o); } };
options($("f-account"), [...new Set(rows.map((r) => r.account))].sort().map((a) => [a, label(a)]));
options($("f-region"), [...new Set(rows.map((r) => r.region))].sort().map((r) => [r, r]));
options($("f-check"), meta.checks.map((c, i) => [String(i), c]));
const bind = (id, key, read = (e) => e.value) => $(id).addEventListener("change", (ev) => {
  state[key] = read(ev.target); apply(); });
let timer = 0;
$("f-text").addEventListener("input", (ev) => { clearTimeout(timer);
  timer = setTimeout(() => { state.q = ev.target.value; apply(); }, 150); });
bind("f-verdict", "verdict"); bind("f-account", "account"); bind("f-region", "region"); bind("f-check", "check");
bind("f-warned", "warned", (e) => e.checked);
$("prev").addEventListener("click", () => { state.page -= 1; draw(); });
$("next").addEventListener("click", () => { state.page += 1; draw(); });
$("instances").tHead.addEventListener("click", (ev) => { const th = ev.target.closest("th[data-sort]");
  if (!th) return; state.dir = state.sort === th.dataset.sort ? -state.dir : 1; state.sort = th.dataset.sort;
  shown.sort(compare); state.page = 0; draw(); });
const fromHash = () => { const m = /^#account=(\d{12})$/.exec(location.hash);
  if (m) { state.account = m[1]; $("f-account").value = m[1]; apply(); $("instances-heading").scrollIntoView(); } };
addEventListener("hashchange", fromHash);
$("filters").hidden = false; $("pager").hidden = false; $("noscript-note").remove();
draw(); fromHash();
})();
"""


def _hash(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


CSP = (
    f"default-src 'none'; style-src '{_hash(_STYLE)}'; script-src '{_hash(_SCRIPT)}'; "
    "base-uri 'none'; form-action 'none'"
)


# ---- counts ----------------------------------------------------------------------------------------------------
def failures_by_check(report: Report) -> Counter[str]:
    """How many instances each check still fails (fail, would-fix or error) after this run."""
    return Counter({check_id: sum(counts.values()) for check_id, counts in failures_by_status(report).items()})


def failures_by_status(report: Report) -> dict[str, Counter[str]]:
    """Per check, in check order, how many instances still fail it, by status (fail, would-fix, error)."""
    tally = PageCounts()
    for entry in report.instances:
        tally.add(entry)
    return tally.failures_by_status()


def page_checks(report: Report) -> tuple[str, ...]:
    """The page's check columns: the endpoint path's own only when some instance takes it (docs/architecture.md §13),
    so a page of public-path instances is what it was."""
    return CHECK_IDS if report.summary.connect_paths.get("endpoint") else check_ids_for("public")


class PageCounts:
    """Every count the summaries show, gathered one instance at a time (no instance is kept)."""

    def __init__(self) -> None:
        self.by_account: dict[str, Counter[str]] = defaultdict(Counter)
        self.by_region: dict[str, Counter[str]] = defaultdict(Counter)
        self.by_path: dict[str, Counter[str]] = defaultdict(Counter)
        self.paths_by_account: dict[str, Counter[str]] = defaultdict(Counter)  # instances per connect path
        # The public path's checks always (a chart bar each); the endpoint path's as instances report them.
        self.by_check: dict[str, Counter[str]] = {check_id: Counter() for check_id in check_ids_for("public")}
        self.instances = 0

    def add(self, entry: InstanceEntry) -> None:
        self.instances += 1
        keys = [self.by_account[entry.account_id], self.by_region[entry.region]]
        path = getattr(entry, "connect_path", None)  # docs/architecture.md §13, where the report carries it
        if path:
            keys.append(self.by_path[path])
            self.paths_by_account[entry.account_id][path] += 1
        for counts in keys:
            counts["instances"] += 1
            counts[entry.verdict] += 1
            counts["warnings"] += bool(entry.warnings)
        by_check = self.by_check
        for check_id, check in entry.checks.items():
            counts = by_check.get(check_id)
            if counts is None:
                counts = by_check[check_id] = Counter()
            counts[check.status] += 1

    def failures_by_status(self) -> dict[str, Counter[str]]:
        return {
            check_id: Counter({s: n for s, n in counts.items() if s in CHART_COLOURS})
            for check_id, counts in self.by_check.items()
        }


# ---- the instance data -----------------------------------------------------------------------------------------
class StringTable:
    """Each distinct repeated string once (a row names it by index): accounts, regions, VPCs, owner tags, reasons,
    guidance and action details repeat across a fleet; instance ids and names do not and stay in the rows."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}

    def of(self, text: str | None) -> int:
        if not text:
            return -1
        return self.index.setdefault(text, len(self.index))

    def texts(self) -> list[str]:
        return list(self.index)


_VERDICT_INDEX = {verdict: n for n, verdict in enumerate(VERDICT_ORDER)}


def instance_row(entry: InstanceEntry, strings: StringTable, checks: tuple[str, ...] = CHECK_IDS) -> list:
    """One instance as the page's script reads it (numbers index `strings`; trailing empty fields dropped)."""
    of = strings.of
    statuses, details = _check_fields(entry, strings, checks)
    row = [
        of(entry.account_id),
        of(entry.region),
        entry.instance_id,
        entry.name or "",
        [of(f"{key}={value}") for key, value in entry.tags.items()],
        of(entry.vpc_id),
        _VERDICT_INDEX[entry.verdict],
        statuses,
        details,
        [of(w) for w in entry.warnings],
        [[of(a.status), of(a.action), a.resource, of(a.detail)] for a in entry.actions],
        of(entry.excluded_reason),
        of(entry.connect_path),  # docs/architecture.md §13
        entry.connect_command or "",  # one per instance: not worth the strings island
    ]
    while row and row[-1] in (-1, [], ""):
        row.pop()
    return row


def _check_fields(entry: InstanceEntry, strings: StringTable, checks: tuple[str, ...]) -> tuple[str, list]:
    """A row's fields that depend on the page's check columns: the status of each of `checks`, and each check not
    passing as [its column (-1: not shown), reason, guidance]."""
    of = strings.of
    statuses = "".join(STATUS_CODES[entry.checks[c].status] if c in entry.checks else "-" for c in checks)
    details = [
        [checks.index(cid) if cid in checks else -1, of(check.reason), of(check.guidance)]
        for cid, check in entry.checks.items()
        if check.status not in ("pass", "not-applicable")
    ]
    return statuses, details


def encoded_rows(entry: InstanceEntry, strings: StringTable, column_sets: tuple[tuple[str, ...], ...]) -> list[str]:
    """`_json(instance_row(entry, strings, checks))` for each of `column_sets` (a page's rows while it is not known
    which columns it shows: outputs/stream.py): the row built once, with the most columns; another set's check fields
    read from it (a set of its columns) and only they encoded again."""
    widest = max(column_sets, key=len)
    row = instance_row(entry, strings, widest)
    if len(column_sets) == 1:
        return [_json(row)]
    # A row is [7 fields, statuses, details, more...]: statuses is never empty (so never dropped), details is empty
    # (and dropped with what follows it) whatever the columns.
    head, more = _json(row[:7])[:-1], ("," + _json(row[9:])[1:] if len(row) > 9 else "]")
    widest_statuses, widest_details = row[7], (row[8] if len(row) > 8 else [])
    encoded = []
    for checks in column_sets:
        statuses, details = widest_statuses, widest_details
        read = None if checks == widest else _columns_of(widest, checks)
        if read is not None:
            picks, moves = read
            statuses = "".join(widest_statuses[i] for i in picks)
            details = [[moves[c] if c >= 0 else -1, reason, guidance] for c, reason, guidance in widest_details]
        elif checks != widest:
            statuses, details = _check_fields(entry, strings, checks)
        encoded.append(head + "," + _json(statuses) + ("," + _json(details) if len(row) > 8 else "") + more)
    return encoded


@functools.cache
def _columns_of(widest: tuple[str, ...], checks: tuple[str, ...]) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """How a row of `checks` is read from a row of `widest`: each of its columns' index in `widest`, and each of
    `widest`'s columns' index in `checks` (-1: not shown); None when `checks` has a column `widest` lacks."""
    if not set(checks) <= set(widest):
        return None
    return tuple(widest.index(c) for c in checks), tuple(checks.index(c) if c in checks else -1 for c in widest)


_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode  # json.dumps' own, built once


def _json(value: object) -> str:
    """JSON for a data island: `<`, `>` and `&` escaped so no text can close the element or open a comment."""
    text = _ENCODE(value)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _island(element_id: str, value: object) -> str:
    """A JSON data island: never executed, never displayed."""
    return f'<script type="application/json" id="{element_id}">{_json(value)}</script>\n'


def _rows_island(
    entries: Iterable[InstanceEntry], strings: StringTable, checks: tuple[str, ...] = CHECK_IDS
) -> Iterator[str]:
    """The rows island, one instance at a time (what a streaming writer writes as it reads the targets)."""
    yield ROWS_OPEN
    separator = ""
    for entry in entries:
        yield separator + _json(instance_row(entry, strings, checks))
        separator = ROW_SEPARATOR
    yield ROWS_CLOSE


def _meta(report: Report) -> dict:
    return {
        "checks": list(page_checks(report)),
        "labels": {a: report.account_label(a) for a in report.account_aliases},
        "verdicts": list(VERDICT_ORDER),
        "status_labels": STATUS_LABEL,
        "warning_checks": {
            code: page_checks(report).index(cid) for code, cid in WARNING_CHECKS.items() if cid in page_checks(report)
        },
        "rows_per_screen": ROWS_PER_SCREEN,
    }


# ---- the visible parts -----------------------------------------------------------------------------------------
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


def _num(value: int, css: str = "n") -> str:
    return f'<td class="{css}">{value}</td>'


def _verdict_cells(counts: Counter[str]) -> str:
    warned = counts["warnings"]
    return (
        f"{_num(counts['instances'])}{_num(counts['compliant'])}{_num(counts['fixed'])}"
        f"{_num(counts['noncompliant'])}{_num(counts['error'])}{_num(counts['excluded'])}"
        f"{_num(warned, 'n warn' if warned else 'n')}"
    )


_VERDICT_HEADS = (
    "<th>instances</th><th>compliant</th><th>fixed</th><th>noncompliant</th><th>errors</th><th>excluded</th>"
    "<th>warnings</th>"
)


def _attention(counts: Counter[str]) -> int:
    return counts["noncompliant"] + counts["error"]


def account_href(account: str, pages: dict[str, str] | None) -> str:
    """Where an account's instances are: this page's filtered table, or its own page when the run was split."""
    return pages[account] if pages is not None else f"#account={account}"


def _accounts_table(report: Report, counts: PageCounts, pages: dict[str, str] | None) -> str:
    """One row per account, those needing attention first: its targets and its instances' verdicts."""
    targets_of: dict[str, list] = defaultdict(list)
    for target in report.targets:
        targets_of[target.account_id].append(target)
    order = sorted(
        report.accounts,
        key=lambda a: (
            -(_attention(counts.by_account[a]) + sum(t.status != "ok" for t in targets_of[a])),
            report.account_label(a),
        ),
    )
    rows = []
    for account in order:
        targets = targets_of[account]
        problems = "; ".join(f"{t.region}: {t.error}" for t in targets if t.error)
        rows.append(
            f'<tr><td><a href="{escape(account_href(account, pages), quote=True)}">'
            f"{escape(report.account_label(account))}</a></td>"
            f"<td>{sum(t.status == 'ok' for t in targets)}/{len(targets)}</td>"
            f"{_verdict_cells(counts.by_account[account])}<td>{escape(problems)}</td></tr>"
        )
    head = (
        '<table class="sum"><thead><tr><th>account</th><th>regions ok</th>'
        f"{_VERDICT_HEADS}<th>target errors</th></tr></thead><tbody>"
    )
    more = ""
    if len(rows) > ACCOUNTS_SHOWN:  # the worst first; the others one click away, so the page starts with what matters
        more = (
            f"<details><summary>the other {len(rows) - ACCOUNTS_SHOWN} accounts</summary>{head}"
            f"{''.join(rows[ACCOUNTS_SHOWN:])}</tbody></table></details>"
        )
    return (
        f'<div><h2 id="by-account">By account ({len(rows)})</h2>{head}{"".join(rows[:ACCOUNTS_SHOWN])}</tbody>'
        f"</table>{more}</div>"
    )


def _regions_table(report: Report, counts: PageCounts) -> str:
    targets_of: dict[str, list] = defaultdict(list)
    for target in report.targets:
        targets_of[target.region].append(target)
    regions = sorted(set(targets_of) | set(counts.by_region), key=lambda r: (-_attention(counts.by_region[r]), r))
    rows = "".join(
        f"<tr><td>{escape(region)}</td>"
        f"<td>{sum(t.status == 'ok' for t in targets_of[region])}/{len(targets_of[region])}</td>"
        f"{_verdict_cells(counts.by_region[region])}</tr>"
        for region in regions
    )
    return (
        '<div><h2 id="by-region">By region</h2><table class="sum"><thead><tr><th>region</th><th>targets ok</th>'
        f"{_VERDICT_HEADS}</tr></thead><tbody>{rows}</tbody></table></div>"
    )


def _checks_table(counts: PageCounts) -> str:
    statuses = ("fail", "would-fix", "error", "fixed", "pass", "not-applicable")
    rows = "".join(
        f'<tr><td title="{escape(check_id, quote=True)}">{escape(check_id)}</td>'
        + "".join(_num(by_status[s], f"n {s}" if by_status[s] and s in NOT_PASSING else "n") for s in statuses)
        + "</tr>"
        for check_id, by_status in counts.by_check.items()
    )
    heads = "".join(f"<th>{escape(STATUS_LABEL[s])}</th>" for s in statuses)
    return (
        '<div><h2 id="by-check">By check</h2><table class="sum"><thead><tr><th>check</th>'
        f"{heads}</tr></thead><tbody>{rows}</tbody></table></div>"
    )


def _paths_table(counts: PageCounts) -> str:
    if not counts.by_path:
        return ""
    rows = "".join(
        f"<tr><td>{escape(path)}</td>{_verdict_cells(by)}</tr>" for path, by in sorted(counts.by_path.items())
    )
    return (
        '<div><h2 id="by-path">By connect path</h2><table class="sum"><thead><tr><th>path</th>'
        f"{_VERDICT_HEADS}</tr></thead><tbody>{rows}</tbody></table></div>"
    )


def _notes(report: Report) -> str:
    """Target notes (not errors: e.g. a near-miss of the opt-in tag), amber."""
    items = "".join(
        f'<li class="warn">{escape(report.account_label(t.account_id))} / {escape(t.region)}: {escape(note)}</li>'
        for t in report.targets
        for note in t.notes
    )
    return f"<h2>Notes</h2><ul>{items}</ul>" if items else ""


def _cards(report: Report) -> str:
    s = report.summary
    return "".join(
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


def _instances_section(heading: str, shown: tuple[str, ...] = CHECK_IDS) -> str:
    verdicts = "".join(f'<option value="{v}">{v}</option>' for v in VERDICT_ORDER)
    checks = "".join(
        f'<th data-sort="check{i}" title="{escape(c)}">{escape(SHORT_IDS.get(c, c))}</th>' for i, c in enumerate(shown)
    )
    # Short check ids (the full id is the tooltip): six full ids would push the reasons off a 1280 px screen.
    return f"""<h2 id="instances-heading">{escape(heading)}</h2>
<p id="noscript-note" class="meta">The instance table needs JavaScript; every instance is in the run's JSON and CSV
reports.</p>
<div id="filters" hidden><input id="f-text" type="search" placeholder="filter: instance, name, owner, reason…"
aria-label="filter text">
<select id="f-verdict" aria-label="verdict"><option value="">every verdict</option>
<option value="attention">needs attention (noncompliant, error)</option>{verdicts}</select>
<select id="f-account" aria-label="account"><option value="">every account</option></select>
<select id="f-region" aria-label="region"><option value="">every region</option></select>
<select id="f-check" aria-label="failing check"><option value="">any check</option></select>
<label><input id="f-warned" type="checkbox"> with a warning</label></div>
<div id="pager" hidden><button id="prev" type="button">previous</button> <span id="count"></span>
<button id="next" type="button">next</button></div>
<table id="instances"><thead><tr><th data-sort="where">account / region / vpc</th><th data-sort="instance">instance</th>
<th data-sort="name">name / owner</th><th data-sort="verdict">verdict</th>{checks}
<th>reasons, what to do, actions</th></tr></thead><tbody></tbody></table>
"""


def _page(
    report: Report, body_data: Iterable[str | bytes], visible: Iterable[str | bytes], preface: str = ""
) -> Iterator[str | bytes]:
    """The page: head, the data islands (not displayed: first in the file, so they can be streamed), the visible
    content, the script."""
    if len(report.accounts) > 5:
        accounts = f"{len(report.accounts)} accounts"
    elif len(report.accounts) > 1:
        accounts = "accounts " + ", ".join(report.account_label(a) for a in report.accounts)
    else:
        accounts = f"account {report.account_label(report.account_id)}"
    yield f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<title>eic-guard {report.mode}-mode run {escape(report.run_id)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_STYLE}</style></head>
<body>
"""
    yield from body_data
    yield preface
    yield f"""<h1>eic-guard {report.mode}-mode run</h1>
<div class="meta">run {escape(report.run_id)} · {escape(accounts)} · regions
{escape(", ".join(report.regions))} · {report.started_at.isoformat()} → {report.finished_at.isoformat()}
· ip-ranges {escape(report.ip_ranges.sync_token)} ({escape(report.ip_ranges.create_date)})</div>
"""
    yield from visible
    yield "</body></html>\n"


def _summary(report: Report, counts: PageCounts, pages: dict[str, str] | None) -> str:
    target_errors = "".join(
        f"<li>{escape(report.account_label(e.account_id))} / {escape(e.region)}: {escape(e.error)}</li>"
        for e in report.target_errors
    )
    accounts = _accounts_table(report, counts, pages) if len(report.accounts) > 1 else ""
    return f"""<div class="cards">{_cards(report)}</div>
{f"<h2>Targets that could not be scanned</h2><ul>{target_errors}</ul>" if target_errors else ""}
{_notes(report)}
<div class="summaries">{_checks_table(counts)}{_regions_table(report, counts)}{_paths_table(counts)}</div>
{accounts}
<h2>Failures by check</h2>
<div class="meta">instances that still fail each check: <span class="fail">fail</span>, <span class="error">error</span>
(could not be checked), <span class="would-fix">would-fix</span> (remediate mode fixes it)</div>
{_chart(counts.failures_by_status())}
"""


ROWS_OPEN = '<script type="application/json" id="eic-rows">['
ROWS_CLOSE = "]</script>\n"
ROW_SEPARATOR = ",\n"


def html_chunks(report: Report, entries: Iterable[InstanceEntry] | None = None, preface: str = "") -> Iterator[str]:
    """The page of `report` (or of `entries`, a part of it: one account's page), piece by piece."""
    entries = report.instances if entries is None else entries
    counts, strings = PageCounts(), StringTable()

    def counted() -> Iterator[InstanceEntry]:
        for entry in entries:
            counts.add(entry)
            yield entry

    yield from page_chunks(report, counts, _rows_island(counted(), strings, page_checks(report)), strings, preface)


def page_chunks(
    report: Report,
    counts: PageCounts,
    rows_island: Iterable[str | bytes],
    strings: StringTable,
    preface: str = "",
) -> Iterator[str | bytes]:
    """A page whose instance rows come as `rows_island` (a generator filling `counts` and `strings` as it goes, or
    rows already encoded: fanout's streamed report spools them), its summaries and script after them."""

    def strings_island() -> Iterator[str]:
        yield _island("eic-strings", strings.texts())  # every string the rows named, once they are all out

    def visible() -> Iterator[str]:
        yield visible_part(report, counts)

    yield from assembled_page(report, rows_island, strings_island(), visible(), preface)


def strings_island(strings: StringTable) -> str:
    return _island("eic-strings", strings.texts())


def visible_part(report: Report, counts: PageCounts) -> str:
    """What a page shows (its summaries, the instance table's frame, the script), from its counts."""
    shown = page_checks(report)
    return _summary(report, counts, None) + _instances_section("Instances", shown) + f"<script>{_SCRIPT}</script>\n"


def assembled_page(
    report: Report,
    rows_island: Iterable[str | bytes],
    strings: Iterable[str | bytes],
    visible: Iterable[str | bytes],
    preface: str = "",
) -> Iterator[str | bytes]:
    """A page from its parts, in the file's order: head, the data islands (meta, rows, strings), the visible part."""

    def islands() -> Iterator[str | bytes]:
        yield _island("eic-meta", _meta(report))
        yield from rows_island
        yield from strings

    yield from _page(report, islands(), visible, preface)


def render_html(report: Report) -> str:
    """The whole page as one string."""
    return "".join(html_chunks(report))


def summary_page(report: Report, counts: PageCounts, pages: dict[str, str]) -> str:
    """The page of a run split by account: the summaries, each account linked to its own page, no instance rows."""
    note = (
        f'<p class="meta">{counts.instances} instances: each account\'s instances are on its own page, linked '
        "from the accounts table.</p>\n"
    )
    return "".join(_page(report, [], [_summary(report, counts, pages) + note]))


def account_pages(report: Report, stem: str) -> dict[str, str]:
    """{account: its page's name} of a run split by account."""
    return {account: f"{stem}.accounts/{account}.html" for account in report.accounts}


def back_link(stem: str) -> str:
    """An account page's link back to the summary page."""
    return f'<p class="meta"><a href="../{escape(stem, quote=True)}.html">all accounts</a></p>\n'


def render_pages(report: Report, page_instances: int | None = None, stem: str = "report") -> dict[str, str]:
    """{relative name: page}: one page up to `page_instances` (PAGE_INSTANCES) instances; beyond, `<stem>.html` holds
    the summaries (no instance rows) and links each account to `<stem>.accounts/<account>.html`, which holds its
    instances."""
    if len(report.instances) <= (page_instances or PAGE_INSTANCES):
        return {f"{stem}.html": render_html(report)}
    pages = account_pages(report, stem)
    counts = PageCounts()
    by_account: dict[str, list[InstanceEntry]] = defaultdict(list)
    for entry in report.instances:
        counts.add(entry)
        by_account[entry.account_id].append(entry)
    out = {f"{stem}.html": summary_page(report, counts, pages)}
    for account in report.accounts:
        part = account_part(report, account, counts)
        out[pages[account]] = "".join(html_chunks(part, by_account[account], back_link(stem)))
    return out


def account_part(report: Report, account: str, counts: PageCounts) -> Report:
    """The report narrowed to one account's targets and counts (its instances are given apart), its connect paths
    its own: its page shows the endpoint path's checks when one of its instances takes it (`page_checks`)."""
    mine = counts.by_account[account]
    errors = [e for e in report.target_errors if e.account_id == account]
    summary = Summary(
        instances=mine["instances"],
        compliant=mine["compliant"],
        fixed=mine["fixed"],
        noncompliant=mine["noncompliant"],
        excluded=mine["excluded"],
        errors=mine["error"] + len(errors),
        warnings=mine["warnings"],
        connect_paths=path_counts(counts.paths_by_account.get(account, {})),
    )
    return report.model_copy(
        update={
            "account_id": account,
            "accounts": [account],
            "targets": [t for t in report.targets if t.account_id == account],
            "target_errors": errors,
            "target_actions": [a for a in report.target_actions if a.account_id == account],
            "summary": summary,
            "instances": [],
        }
    )
