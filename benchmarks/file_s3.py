"""A stand-in for the S3 client of the Aggregate at a million instances (benchmarks/org_scale.py): the run's result
objects are files seeded once on disk (benchmarks/synthetic.py's documents, a GET reads one), and what the Aggregate
writes goes to files too. Nothing is held in the measured process but what the Aggregate itself holds: an
in-process moto would keep the whole fleet's results (and the report) in the very memory being measured.

Only the calls the Aggregate makes: list_objects_v2 (paginated), get_object, put_object and the multipart upload.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from botocore.exceptions import ClientError


class _Pages:
    def __init__(self, s3: FileS3):
        self.s3 = s3

    def paginate(self, Bucket: str, Prefix: str):
        keys = sorted(k for k in self.s3.names() if k.startswith(Prefix))
        for start in range(0, len(keys), 1000):
            yield {"Contents": [{"Key": k} for k in keys[start : start + 1000]]}


class FileS3:
    """Keys under `results/` map to seeded files (<account>/<region>.json under `results`), others to `written`."""

    def __init__(self, run_prefix: str, results: Path, written: Path, region: str = "us-east-1"):
        self.run_prefix, self.results, self.written = run_prefix, results, written
        self.meta = SimpleNamespace(region_name=region)
        self.small: dict[str, bytes] = {}  # the manifest and other small objects the steps put
        self.uploads: dict[str, list[int]] = {}  # each part's size
        written.mkdir(parents=True, exist_ok=True)

    def names(self) -> list[str]:
        found = [
            f"{self.run_prefix}results/{path.parent.name}/{path.stem}/apply-r1.json"
            for path in self.results.glob("*/*.json")
        ]
        return found + list(self.small)

    def get_paginator(self, name: str) -> _Pages:
        assert name == "list_objects_v2"
        return _Pages(self)

    def _path(self, key: str) -> Path | None:
        if key.startswith(f"{self.run_prefix}results/"):
            account, region, _ = key[len(self.run_prefix) + len("results/") :].split("/")
            return self.results / account / f"{region}.json"
        return None

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:
        if Key in self.small:
            return {"Body": io.BytesIO(self.small[Key])}
        path = self._path(Key)
        if path is None or not path.exists():
            raise ClientError({"Error": {"Code": "NoSuchKey", "Message": Key}}, "GetObject")
        return {"Body": io.BytesIO(path.read_bytes())}

    def _out(self, key: str) -> Path:
        path = self.written / key
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def put_object(self, Bucket: str, Key: str, Body: bytes, **_: Any) -> dict:
        if Key.startswith(self.run_prefix):
            self.small[Key] = bytes(Body)
        else:
            self._out(Key).write_bytes(Body)
        return {"ETag": '"' + hashlib.md5(Body).hexdigest() + '"'}

    def create_multipart_upload(self, Bucket: str, Key: str, **_: Any) -> dict:
        self.uploads[Key] = []
        self._out(Key).write_bytes(b"")
        return {"UploadId": Key}

    def upload_part(self, Bucket: str, Key: str, UploadId: str, PartNumber: int, Body: bytes) -> dict:
        assert PartNumber == len(self.uploads[Key]) + 1
        with self._out(Key).open("ab") as out:
            out.write(Body)
        self.uploads[Key].append(len(Body))
        return {"ETag": f'"part-{PartNumber}"'}

    def complete_multipart_upload(self, Bucket: str, Key: str, UploadId: str, MultipartUpload: dict) -> dict:
        sizes = self.uploads.pop(Key)
        assert [p["PartNumber"] for p in MultipartUpload["Parts"]] == list(range(1, len(sizes) + 1))
        assert all(size >= 5 * 1024 * 1024 for size in sizes[:-1]), "S3: every part but the last at least 5 MiB"
        return {}

    def abort_multipart_upload(self, Bucket: str, Key: str, UploadId: str) -> dict:
        self.uploads.pop(Key, None)
        self._out(Key).unlink(missing_ok=True)
        return {}


def seed(directory: Path, documents) -> int:
    """Write each document to <account>/<region>.json under `directory`, once (a `done` marker names the fleet)."""
    total = 0
    for document in documents:
        path = directory / document["account_id"] / f"{document['region']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps(document).encode()
        path.write_bytes(body)
        total += len(body)
    return total
