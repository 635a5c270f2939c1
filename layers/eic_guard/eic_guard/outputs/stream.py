"""A run's report written as its targets are read, in memory independent of the fleet (docs/architecture.md §15).

The Aggregate reads one target's merged result at a time and hands it to a `ReportStream`, which keeps only
counters, the targets' short entries and the alert's bounded tally (outputs.alerts.ProblemTally), and appends each
instance, once encoded, to spool files in the function's ephemeral storage (/tmp):

- the JSON report's instance entries, encoded from the report model (the bytes `Report.to_json_bytes` gives them);
- the HTML rows of the one-page report (while the run is within outputs.html.PAGE_INSTANCES instances) and of each
  account's page (a run beyond it is split by account), each in both column sets (outputs.html.page_checks: the
  public path's checks, or every check when an instance takes the endpoint path) until the page's last instance is
  read, the one not shown then dropped.

When every target is read, the summary, the targets and the rest of the report are known: `store` writes the JSON
report as its head, the spooled entries and its tail, and the HTML page(s), each through an S3 multipart upload of
PART_BYTES parts (a PutObject when it is smaller), so that neither the report nor a page is ever whole in memory. The
objects are the documented ones, byte for byte what the in-memory path writes (tests/integration/
test_streamed_report.py). A run whose report cannot be stored keeps its summary, metrics and alert.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ..checks import CHECK_IDS, check_ids_for
from ..observability import logger
from .alerts import FAILING, Problem, ProblemTally, entry_problems, target_problem
from .html import (
    PAGE_INSTANCES,
    ROW_SEPARATOR,
    ROWS_CLOSE,
    ROWS_OPEN,
    PageCounts,
    StringTable,
    account_pages,
    account_part,
    assembled_page,
    back_link,
    encoded_rows,
    page_checks,
    page_chunks,
    strings_island,
    summary_page,
    visible_part,
)
from .report import InstanceEntry, Report, account_label, path_counts, report_header, target_entry

PART_BYTES = 8 * 1024 * 1024  # S3 multipart: every part but the last at least 5 MiB
BUFFER_BYTES = 1024 * 1024  # a spool's writes are gathered into this much before they reach the file
_INSTANCES = b'\n  "instances": [],\n'  # where the instance entries go in the report's indented JSON
_ENTRY_SERIALIZER = InstanceEntry.__pydantic_serializer__
_COLUMN_SETS = (check_ids_for("public"), CHECK_IDS)  # a page's: outputs.html.page_checks
_SEPARATOR = ROW_SEPARATOR.encode()


class S3Upload:
    """One S3 object written piece by piece: a multipart upload of PART_BYTES parts once it outgrows one part, a
    PutObject otherwise. Used as a context manager: an error aborts the upload (no parts left behind)."""

    def __init__(self, s3: Any, bucket: str, key: str, content_type: str, part_bytes: int | None = None):
        self.s3, self.bucket, self.key, self.content_type = s3, bucket, key, content_type
        self.part_bytes = part_bytes or PART_BYTES
        self.buffer = bytearray()
        self.parts: list[dict] = []
        self.upload_id: str | None = None
        self.size = 0

    def write(self, data: bytes | str) -> None:
        data = data.encode() if isinstance(data, str) else data
        self.buffer += data
        self.size += len(data)
        if len(self.buffer) >= self.part_bytes:
            self._part()

    def _part(self) -> None:
        if self.upload_id is None:
            started = self.s3.create_multipart_upload(Bucket=self.bucket, Key=self.key, ContentType=self.content_type)
            self.upload_id = started["UploadId"]
        number = len(self.parts) + 1
        answer = self.s3.upload_part(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=bytes(self.buffer)
        )
        self.parts.append({"ETag": answer["ETag"], "PartNumber": number})
        self.buffer = bytearray()

    def close(self) -> None:
        if self.upload_id is None:
            self.s3.put_object(Bucket=self.bucket, Key=self.key, Body=bytes(self.buffer), ContentType=self.content_type)
            return
        if self.buffer:
            self._part()
        self.s3.complete_multipart_upload(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, MultipartUpload={"Parts": self.parts}
        )

    def abort(self) -> None:
        if self.upload_id is None:
            return
        try:
            self.s3.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
        except (ClientError, BotoCoreError) as exc:  # the bucket's lifecycle rule removes it after a day
            logger.warning("multipart upload not aborted", extra={"key": self.key, "error": str(exc)})

    def __enter__(self) -> S3Upload:
        return self

    def __exit__(self, kind: Any, *_: Any) -> None:
        if kind is not None:
            self.abort()
            return
        try:
            self.close()
        except BaseException:  # the last part or the completion refused: no parts left behind either
            self.abort()
            raise


class Spool:
    """An append-only temporary file (ephemeral storage: /tmp in Lambda), written through a buffer of BUFFER_BYTES
    and read back in PART_BYTES chunks."""

    def __init__(self, directory: str | None = None):
        self.file = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115 (closed by close())
        self.buffer = bytearray()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.buffer += data
        self.size += len(data)
        if len(self.buffer) >= BUFFER_BYTES:
            self._flush()

    def _flush(self) -> None:
        self.file.seek(0, 2)  # at the end, whatever was read back meanwhile
        self.file.write(self.buffer)
        self.buffer = bytearray()

    def chunks(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        end = self.size if end is None else end
        if self.buffer:
            self._flush()
        self.file.flush()
        self.file.seek(start)
        while start < end:
            chunk = self.file.read(min(PART_BYTES, end - start))
            if not chunk:
                return
            start += len(chunk)
            yield chunk

    def truncate(self, size: int) -> None:
        """What was written from `size` on dropped."""
        flushed = self.size - len(self.buffer)
        if size >= flushed:
            del self.buffer[size - flushed :]
        else:
            self.buffer = bytearray()
            self.file.truncate(size)
        self.size = size

    def close(self) -> None:
        self.file.close()


class _Rows:
    """One page's rows as they are encoded: its string table, its stretches of the spool; once its account is done
    (`close`), its strings island and visible part are spooled too and the table let go."""

    def __init__(self) -> None:
        self.strings = StringTable()
        self.segments: list[tuple[int, int]] = []
        self.rows = 0
        self.closed: tuple[tuple[int, int], tuple[int, int]] | None = None  # (strings island, visible part)

    def close(self, spool: Spool, visible: str) -> None:
        start = spool.size
        spool.write(strings_island(self.strings).encode())
        middle = spool.size
        spool.write(visible.encode())
        self.closed = ((start, middle), (middle, spool.size))
        self.strings = StringTable()

    def add(self, spool: Spool, encoded: str) -> None:
        """One row, encoded with this page's string table (outputs.html.encoded_rows)."""
        start = spool.size
        row = encoded.encode()
        spool.write(_SEPARATOR + row if self.rows else row)
        if self.segments and self.segments[-1][1] == start:
            self.segments[-1] = (self.segments[-1][0], spool.size)
        else:
            self.segments.append((start, spool.size))
        self.rows += 1

    def island(self, spool: Spool) -> Iterator[str | bytes]:
        yield ROWS_OPEN
        for start, end in self.segments:
            yield from spool.chunks(start, end)
        yield ROWS_CLOSE

    def spooled(self, spool: Spool, which: int) -> Iterator[bytes]:
        assert self.closed is not None
        yield from spool.chunks(*self.closed[which])

    def drop(self, spool: Spool) -> None:
        """Its rows taken back from the spool (they are the spool's last stretch: its account's, still open)."""
        if self.segments:
            spool.truncate(self.segments[0][0])
        self.segments, self.rows = [], 0


class _AccountPage:
    """An account's page while its targets are read: its counts, and its rows in both column sets (public checks;
    every check), one string table, until it is known which the page shows (outputs.html.page_checks of its
    outputs.html.account_part): the public set is dropped at its first endpoint-path instance, the set not shown
    when the account is done (`close`)."""

    def __init__(self) -> None:
        self.counts = PageCounts()
        self.public: _Rows | None = _Rows()
        self.every: _Rows | None = _Rows()
        self.every.strings = self.public.strings
        self.shown: tuple[_Rows, int] | None = None  # once closed: its rows and the index of their spool

    def add(self, spools: tuple[Spool, Spool], entry: InstanceEntry) -> None:
        self.counts.add(entry)
        assert self.every is not None
        if self.public is not None and entry.connect_path == "endpoint":
            self.public.drop(spools[0])
            self.public = None
        if self.public is None:
            [every] = encoded_rows(entry, self.every.strings, (CHECK_IDS,))
        else:
            public, every = encoded_rows(entry, self.every.strings, _COLUMN_SETS)
            self.public.add(spools[0], public)
        self.every.add(spools[1], every)

    def close(self, spools: tuple[Spool, Spool], visible: str, checks: tuple[str, ...]) -> None:
        """Its page shows `checks`: those rows get the strings island and the visible part, the others are dropped."""
        which = 1 if checks == CHECK_IDS else 0
        rows, other = (self.public, self.every) if which == 0 else (self.every, self.public)
        assert rows is not None, "the public checks after an endpoint-path instance"
        if other is not None:
            other.drop(spools[1 - which])
        rows.close(spools[which], visible)
        self.shown, self.public, self.every, self.counts = (rows, which), None, None, PageCounts()


class ReportStream:
    """The report of a run being read one target at a time (module docstring); `finish` gives the report without
    its instances (summary, targets, target actions and errors), `store` writes the whole report and its pages."""

    def __init__(
        self,
        *,
        run_id: str,
        mode: str,
        account_id: str,
        regions: list[str],
        started: datetime,
        finished: datetime,
        ip_ranges: Any,
        tally: ProblemTally | None = None,
        directory: str | None = None,
        page_instances: int | None = None,
    ):
        self.header = report_header(run_id, mode, account_id, regions, started, finished, ip_ranges)
        self.tally = tally
        self.page_instances = page_instances or PAGE_INSTANCES
        self.entries = Spool(directory)  # the JSON report's instance entries, indented as in the report
        self.pages = (Spool(directory), Spool(directory))  # every account's page rows: public checks; every check
        self.main_spools = (Spool(directory), Spool(directory))  # the one page's rows: public checks; every check
        self.main = (_Rows(), _Rows())
        self.main[1].strings = self.main[0].strings  # one string table: the two encodings differ in checks only
        self.counts = PageCounts()  # the whole run's: the summary, the pages' summaries and the metrics count on it
        self.by_account: dict[str, _AccountPage] = {}
        self.instances = 0
        self.targets: list[dict] = []
        self.target_actions: list[dict] = []
        self.target_errors: list[dict] = []
        self.aliases: dict[str, str] = {}
        self.applied = self.failed = 0  # remediations, for the metrics (observability.record_scan_counts)
        self.report: Report | None = None
        self.open_account: str | None = None
        self.opened = (0, 0, 0)  # where the open account's targets, actions and errors begin

    def _close_account(self) -> None:
        """The open account's page, but its head and meta island (which name every account's alias): spooled."""
        account = self.open_account
        page = self.by_account.get(account) if account else None
        if account is None or page is None:
            return
        mine = {
            **self.header,
            "summary": {"instances": 0, "compliant": 0, "fixed": 0, "noncompliant": 0, "excluded": 0, "errors": 0},
            "accounts": [account],
            "account_aliases": dict(self.aliases),
            "targets": self.targets[self.opened[0] :],
            "instances": [],
            "target_actions": self.target_actions[self.opened[1] :],
            "target_errors": self.target_errors[self.opened[2] :],
        }
        part = account_part(Report.model_validate(mine), account, self.counts)
        page.close(self.pages, visible_part(part, page.counts), page_checks(part))

    # ---- reading ----------------------------------------------------------------------------------------------
    def add_target(self, target: dict) -> None:
        """One target's merged document (fanout.aggregate.merge_target): its instances are encoded and counted,
        its short entry kept."""
        account, region = target["account_id"], target["region"]
        if account != self.open_account:
            self._close_account()
            assert account not in self.by_account, "a run's targets come account by account (fanout.targets)"
            self.open_account = account
            self.opened = (len(self.targets), len(self.target_actions), len(self.target_errors))
        if target.get("account_alias"):
            self.aliases[account] = target["account_alias"]
        problems: dict[bytes, Problem] = {}
        for raw in target["instances"]:
            entry = InstanceEntry.model_validate(raw)
            self._entry(entry)
            if self.tally is not None:
                for problem in entry_problems(entry):
                    problems.setdefault(problem.fingerprint, problem)
            log_entry(entry, self._label(entry.account_id))
        if target["error"]:
            self.target_errors.append({"region": region, "account_id": account, "error": target["error"]})
            problem = target_problem(account, region, target["error"])
            problems.setdefault(problem.fingerprint, problem)
        if self.tally is not None and problems:
            self.tally.add_target((account, region), problems)
        self.targets.append(target_entry(target))
        self.target_actions += [{"region": region, "account_id": account, **a} for a in target["actions"]]

    def _label(self, account: str) -> str:
        return account_label(self.aliases, account)

    def _entry(self, entry: InstanceEntry) -> None:
        self.instances += 1
        body = _ENTRY_SERIALIZER.to_json(entry, indent=2, by_alias=True).replace(b"\n", b"\n    ")
        self.entries.write((b"    " if self.instances == 1 else b",\n    ") + body)
        self.counts.add(entry)
        if self.instances <= self.page_instances:  # the one page, while the run fits it
            encoded = encoded_rows(entry, self.main[0].strings, _COLUMN_SETS)
            for spool, rows, row in zip(self.main_spools, self.main, encoded, strict=True):
                rows.add(spool, row)
        elif self.main_spools:  # split by account: the one page's rows are not needed
            for spool in self.main_spools:
                spool.close()
            self.main_spools = ()
        page = self.by_account.get(entry.account_id)
        if page is None:
            page = self.by_account[entry.account_id] = _AccountPage()
        assert page.shown is None, "a run's targets come account by account (fanout.targets)"
        page.add(self.pages, entry)
        for action in entry.actions:
            self.applied += action.status == "done"
            self.failed += action.status == "failed"

    @property
    def failures(self) -> dict[str, int]:
        """Instances still failing each check (fail, would-fix, error), every check named (CheckFailures)."""
        failing = {c: sum(n for s, n in by.items() if s in FAILING) for c, by in self.counts.by_check.items()}
        return {**dict.fromkeys(CHECK_IDS, 0), **failing}

    @property
    def noncompliant_by_account(self) -> dict[str, int]:
        """Non-compliant and errored instances per account (TargetInstancesNoncompliant)."""
        return {a: by["noncompliant"] + by["error"] for a, by in self.counts.by_account.items()}

    # ---- the report -------------------------------------------------------------------------------------------
    def finish(self) -> Report:
        """The report without its instances (what build_report gives, `instances` empty)."""
        self._close_account()
        self.open_account = None
        totals = sum(self.counts.by_account.values(), Counter())  # every instance is counted under its account
        self.report = Report.model_validate(
            {
                **self.header,
                "summary": {
                    "instances": self.instances,
                    "errors": totals["error"] + len(self.target_errors),
                    "warnings": totals["warnings"],
                    "connect_paths": path_counts({path: by["instances"] for path, by in self.counts.by_path.items()}),
                    **{v: totals[v] for v in ("compliant", "fixed", "noncompliant", "excluded")},
                },
                "accounts": sorted({t["account_id"] for t in self.targets}),
                "account_aliases": self.aliases,
                "targets": self.targets,
                "instances": [],
                "target_actions": self.target_actions,
                "target_errors": self.target_errors,
            }
        )
        return self.report

    def json_chunks(self) -> Iterator[bytes]:
        """The report's JSON, byte for byte what Report.to_json_bytes gives for the report with its instances."""
        assert self.report is not None, "finish() first"
        skeleton = self.report.to_json_bytes()
        if not self.instances:
            yield skeleton
            return
        at = skeleton.index(_INSTANCES)
        yield skeleton[:at] + b'\n  "instances": [\n'
        yield from self.entries.chunks()
        yield b"\n  ],\n" + skeleton[at + len(_INSTANCES) :]

    def html_pages(self, stem: str) -> Iterator[tuple[str, Iterable[str | bytes]]]:
        """(relative name, chunks) of each HTML page: outputs.html.render_pages' pages."""
        report = self.report
        assert report is not None, "finish() first"
        if self.instances <= self.page_instances:
            which = 1 if report.summary.connect_paths.get("endpoint") else 0  # outputs.html.page_checks
            rows = self.main[which]
            yield f"{stem}.html", page_chunks(report, self.counts, rows.island(self.main_spools[which]), rows.strings)
            return
        pages = account_pages(report, stem)
        back = back_link(stem)
        yield f"{stem}.html", [summary_page(report, self.counts, pages)]
        for account in report.accounts:
            part = account_part(report, account, self.counts)
            page = self.by_account.get(account)
            if page is None:  # no instance: nothing spooled
                empty = _Rows().island(self.pages[0])
                yield pages[account], page_chunks(part, PageCounts(), empty, StringTable(), back)
                continue
            assert page.shown is not None
            rows, spool = page.shown[0], self.pages[page.shown[1]]
            island, strings, visible = rows.island(spool), rows.spooled(spool, 0), rows.spooled(spool, 1)
            yield pages[account], assembled_page(part, island, strings, visible, back)

    def store(self, s3: Any, bucket: str, key: str) -> None:
        """The JSON report at `<key>.json` and its page(s) beside it (outputs.publish.store_scan_report)."""
        with S3Upload(s3, bucket, f"{key}.json", "application/json") as upload:
            for chunk in self.json_chunks():
                upload.write(chunk)
        folder = key.rsplit("/", 1)[0]
        for name, chunks in self.html_pages(key.rsplit("/", 1)[1]):
            with S3Upload(s3, bucket, f"{folder}/{name}", "text/html; charset=utf-8") as upload:
                for chunk in chunks:
                    upload.write(chunk)

    def close(self) -> None:
        for spool in (self.entries, *self.pages, *self.main_spools):
            spool.close()


def log_entry(entry: InstanceEntry, account: str) -> None:
    """One structured line per check an instance still fails and per warning, so logs can be searched by instance,
    name, owner, account and check."""
    failing = [(cid, c) for cid, c in entry.checks.items() if c.status in ("fail", "would-fix", "error")]
    if not failing and not entry.warnings:
        return
    about = {
        "instance_id": entry.instance_id,
        "instance_name": entry.name,
        "owner_tags": entry.tags,
        "account": account,
        "region": entry.region,
    }
    for check_id, check in failing:
        logger.info(
            "check not passing", extra={**about, "check": check_id, "status": check.status, "reason": check.reason}
        )
    for warning in entry.warnings:
        logger.info("warning", extra={**about, "warning": warning})


__all__ = ["PART_BYTES", "ReportStream", "S3Upload", "Spool", "log_entry"]
