"""The lake: Parquet tables partitioned by ``ds`` and binary objects, on a local folder or S3.

One root URI holds everything (``file:///…`` or ``s3://bucket/prefix``); both go through
``pyarrow.fs`` so every caller sees the same behaviour.

Partitions are written atomically. Each write goes to a fresh version folder
``<table>/ds=<ds>/v=<version>/``; only then is the partition's small pointer object
``<table>/ds=<ds>/_CURRENT.json`` replaced (a rename on a local disk, a single PUT on S3, both atomic).
Readers follow the pointer, so they see the previous version or the new one, never half of either.
"""

from __future__ import annotations

import io
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from visrec.errors import VisrecError
from visrec.settings import Settings
from visrec.store.schemas import TableSpec, conform, spec_for

POINTER = "_CURRENT.json"
RELEASE_KEY = "published/_RELEASE.json"  # what the warehouse shows: see visrec.publish
_DS = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")  # ASCII digits: \d would accept "２０２６"
_KEEP_VERSIONS = 2  # the current one and the one before it, for readers that opened it just now


class LakeError(VisrecError):
    """The lake could not be read or written (unreachable store, missing object, bad key)."""


class PartitionNotFound(LakeError):
    """A table has no published partition for the requested ``ds``."""


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe relative object key; raise :class:`LakeError` otherwise.

    Refused: empty keys or segments, absolute paths, ``.``/``..`` segments, backslashes and control
    characters: anything that could escape the lake root or mean different things on disk and on S3.
    """
    if not isinstance(key, str) or not key:
        raise LakeError("object key is empty")
    if key.startswith("/") or re.match(r"^[a-zA-Z]:", key):
        raise LakeError(f"object key {key!r} is absolute; keys are relative to the lake root")
    if "\\" in key or any(ord(ch) < 32 for ch in key):
        raise LakeError(f"object key {key!r} contains a backslash or a control character")
    for part in key.rstrip("/").split("/"):
        if part in ("", ".", ".."):
            raise LakeError(f"object key {key!r} has an empty, '.' or '..' segment")
    return key


def check_ds(ds: str) -> str:
    """Return ``ds`` if it is a ``YYYY-MM-DD`` date; raise :class:`LakeError` otherwise."""
    if not isinstance(ds, str) or not _DS.match(ds):
        raise LakeError(f"ds must be a date like 2026-01-31, got {ds!r}")
    try:
        datetime.strptime(ds, "%Y-%m-%d")
    except ValueError:
        raise LakeError(f"ds {ds!r} is not a real date") from None
    return ds


@dataclass(frozen=True)
class Manifest:
    """What a partition's pointer says: the version readers see, its files and row count."""

    table: str
    ds: str
    version: str
    files: tuple[str, ...]
    rows: int
    written_at: str

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "table": self.table,
                "ds": self.ds,
                "version": self.version,
                "files": list(self.files),
                "rows": self.rows,
                "written_at": self.written_at,
            },
            indent=1,
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        raw = json.loads(data)
        return cls(
            table=raw["table"],
            ds=raw["ds"],
            version=raw["version"],
            files=tuple(raw["files"]),
            rows=int(raw["rows"]),
            written_at=raw["written_at"],
        )


def make_filesystem(
    uri: str, s3_endpoint: str | None = None, s3_region: str = "us-east-1"
) -> tuple[pafs.FileSystem, str]:
    """Return the pyarrow filesystem for ``uri`` and the root path inside it."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return pafs.LocalFileSystem(), parsed.path.rstrip("/") or "/"
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise LakeError(f"S3 lake URI {uri!r} has no bucket; use s3://bucket/prefix")
        kwargs: dict[str, object] = {"region": s3_region}
        if s3_endpoint:
            endpoint = urlparse(s3_endpoint)
            kwargs["endpoint_override"] = endpoint.netloc or s3_endpoint
            kwargs["scheme"] = endpoint.scheme or "https"
        # Fail fast on an unreachable endpoint instead of retrying for minutes.
        kwargs["connect_timeout"] = 5
        kwargs["request_timeout"] = 30
        kwargs["retry_strategy"] = pafs.AwsStandardS3RetryStrategy(max_attempts=2)
        fs = pafs.S3FileSystem(**kwargs)
        return fs, f"{parsed.netloc}{parsed.path.rstrip('/')}"
    raise LakeError(f"unsupported lake URI {uri!r}: use file:///path or s3://bucket/prefix")


def as_uri(location: str) -> str:
    """A lake or output location as a URI: ``s3://...`` and ``file://...`` as they are, a plain path
    (``./shop``, ``/data/lake``) as the ``file://`` URI of its absolute path."""
    if "://" in location:
        return location
    return Path(location).expanduser().resolve().as_uri()


class Lake:
    """Tables and objects under one root URI (a plain path is a local folder)."""

    def __init__(self, uri: str, *, s3_endpoint: str | None = None, s3_region: str = "us-east-1"):
        self.uri = as_uri(uri).rstrip("/")
        self.s3_endpoint, self.s3_region = s3_endpoint, s3_region  # to open the same lake elsewhere
        self.fs, self.root = make_filesystem(self.uri, s3_endpoint, s3_region)
        self.is_local = isinstance(self.fs, pafs.LocalFileSystem)

    @classmethod
    def from_settings(cls, settings: Settings) -> Lake:
        return cls(settings.lake_uri, s3_endpoint=settings.s3_endpoint, s3_region=settings.s3_region)

    def __repr__(self) -> str:
        return f"Lake({self.uri!r})"

    # --- paths -------------------------------------------------------------------------------------
    def path(self, key: str) -> str:
        """The filesystem path of ``key`` (validated) under the root."""
        return f"{self.root}/{check_key(key)}"

    def url(self, key: str) -> str:
        """The full URI of ``key``, for logs, tables and other tools."""
        return f"{self.uri}/{check_key(key)}"

    def _wrap(self, action: str, key: str, exc: Exception) -> LakeError:
        if isinstance(exc, FileNotFoundError):
            return LakeError(f"{action} {self.url(key)}: not found")
        return LakeError(f"{action} {self.url(key)} failed: {exc}")

    # --- objects -----------------------------------------------------------------------------------
    def put_bytes(self, key: str, data: bytes) -> None:
        """Write an object. Local writes go through a temporary file and a rename (atomic)."""
        path = self.path(key)
        try:
            parent = path.rsplit("/", 1)[0]
            if self.is_local:
                self.fs.create_dir(parent, recursive=True)
                tmp = f"{parent}/.tmp-{uuid.uuid4().hex}"
                with self.fs.open_output_stream(tmp) as out:
                    out.write(data)
                self.fs.move(tmp, path)
            else:
                with self.fs.open_output_stream(path) as out:
                    out.write(data)
        except OSError as exc:
            raise self._wrap("writing", key, exc) from None

    def get_bytes(self, key: str) -> bytes:
        """Read a whole object."""
        try:
            with self.fs.open_input_stream(self.path(key)) as src:
                return src.read()
        except OSError as exc:
            raise self._wrap("reading", key, exc) from None

    def exists(self, key: str) -> bool:
        try:
            return self.fs.get_file_info(self.path(key)).type != pafs.FileType.NotFound
        except OSError as exc:
            raise self._wrap("checking", key, exc) from None

    def list_keys(self, prefix: str) -> list[str]:
        """All object keys under ``prefix`` (recursive, sorted, relative to the root)."""
        base = self.path(prefix.rstrip("/"))
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        except OSError as exc:
            raise self._wrap("listing", prefix, exc) from None
        n = len(self.root) + 1
        return sorted(i.path[n:] for i in infos if i.type == pafs.FileType.File)

    def list_dirs(self, prefix: str) -> list[str]:
        """Names of the immediate sub-folders of ``prefix``."""
        base = self.path(prefix.rstrip("/"))
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=False, allow_not_found=True))
        except OSError as exc:
            raise self._wrap("listing", prefix, exc) from None
        return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)

    def delete(self, prefix: str) -> None:
        """Delete an object or everything under a prefix; missing is fine."""
        path = self.path(prefix.rstrip("/"))
        try:
            info = self.fs.get_file_info(path)
            if info.type == pafs.FileType.Directory:
                self.fs.delete_dir(path)
            elif info.type == pafs.FileType.File:
                self.fs.delete_file(path)
        except OSError as exc:
            raise self._wrap("deleting", prefix, exc) from None

    # --- tables ------------------------------------------------------------------------------------
    def _spec(self, table: str | TableSpec) -> TableSpec:
        return table if isinstance(table, TableSpec) else spec_for(table)

    def _pointer_key(self, spec: TableSpec, ds: str) -> str:
        return f"{spec.path}/ds={check_ds(ds)}/{POINTER}"

    def write_table(self, table: str | TableSpec, ds: str, data: pa.Table) -> Manifest:
        """Replace the ``ds`` partition of ``table`` with ``data``, atomically.

        The data is checked against the table's schema first. A rerun for the same ``ds`` replaces the
        partition; it never appends. Old versions beyond the previous one are removed afterwards.
        """
        version = self.new_version()
        name = self.write_part(table, ds, version, "part-0", data)
        return self.commit(table, ds, version, [(name, data.num_rows)])

    @staticmethod
    def new_version() -> str:
        """A fresh version name for a partition (they sort by time)."""
        return f"{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}"

    def write_part(self, table: str | TableSpec, ds: str, version: str, part: str, data: pa.Table) -> str:
        """Write one Parquet file of a partition's (uncommitted) ``version``, checked against the
        table's schema; return its name within the partition. Readers see nothing until
        :meth:`commit`, so many writers (e.g. Spark tasks) can each write their own part."""
        spec = self._spec(table)
        data = conform(data, spec.schema, spec.name)
        name = f"v={version}/{part}.parquet"
        buffer = io.BytesIO()
        pq.write_table(data, buffer, compression="zstd")
        self.put_bytes(f"{spec.path}/ds={check_ds(ds)}/{name}", buffer.getvalue())
        return name

    def commit(self, table: str | TableSpec, ds: str, version: str, parts: list[tuple[str, int]]) -> Manifest:
        """Make ``version`` (its ``parts``: file names and row counts) the partition readers see: one
        write of the pointer, the switch."""
        spec = self._spec(table)
        manifest = Manifest(
            table=spec.name,
            ds=ds,
            version=version,
            files=tuple(name for name, _ in parts),
            rows=sum(rows for _, rows in parts),
            written_at=datetime.now(UTC).isoformat(),
        )
        self.put_bytes(self._pointer_key(spec, ds), manifest.to_json())
        self._drop_old_versions(f"{spec.path}/ds={check_ds(ds)}", keep=version)
        return manifest

    def _drop_old_versions(self, part_dir: str, keep: str) -> None:
        versions = [d for d in self.list_dirs(part_dir) if d.startswith("v=")]
        # Version names sort by time; keep the newest few, always including the current one, and
        # never a version the published release still points at (readers of the warehouse use it).
        released = self._released_files() if len(versions) > _KEEP_VERSIONS else set()
        stale = [
            v
            for v in sorted(versions)[:-_KEEP_VERSIONS]
            if v != f"v={keep}" and not any(f.startswith(f"{part_dir}/{v}/") for f in released)
        ]
        for name in stale:
            self.delete(f"{part_dir}/{name}")

    def drop_other_versions(self, table: str | TableSpec, ds: str) -> None:
        """Delete every version of a partition but the current one (used when rows must be gone for
        good, e.g. a forgotten user; the caller has moved the release off the old versions first)."""
        spec = self._spec(table)
        manifest = self.manifest(spec, ds)
        if manifest is None:
            return
        part_dir = f"{spec.path}/ds={check_ds(ds)}"
        for name in self.list_dirs(part_dir):
            if name.startswith("v=") and name != f"v={manifest.version}":
                self.delete(f"{part_dir}/{name}")

    def _released_files(self) -> set[str]:
        if not self.exists(RELEASE_KEY):
            return set()
        release = json.loads(self.get_bytes(RELEASE_KEY))
        return {
            key for parts in release.get("tables", {}).values() for keys in parts.values() for key in keys
        }

    def manifest(self, table: str | TableSpec, ds: str) -> Manifest | None:
        """The current manifest of a partition, or None when it was never written."""
        spec = self._spec(table)
        key = self._pointer_key(spec, ds)
        try:
            return Manifest.from_json(self.get_bytes(key))
        except LakeError:
            if not self.exists(key):
                return None
            raise

    def partitions(self, table: str | TableSpec) -> list[str]:
        """The ``ds`` values that have a published partition, sorted."""
        return sorted(self.committed_at(table))

    def committed_at(self, table: str | TableSpec) -> dict[str, datetime]:
        """``ds`` -> when its pointer was last written (the storage's clock; on S3 to the second), for
        every published partition, from one listing of the table (no read per partition)."""
        spec = self._spec(table)
        base = self.path(spec.path)
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        except OSError as exc:
            raise self._wrap("listing", spec.path, exc) from None
        out = {}
        for info in infos:
            folder, _, name = info.path[len(base) + 1 :].partition("/")
            if name == POINTER and folder.startswith("ds=") and info.type == pafs.FileType.File:
                out[folder[3:]] = info.mtime
        return out

    def partition_files(self, table: str | TableSpec, ds: str) -> list[str]:
        """Full URIs of the Parquet files readers should see for a partition (for DuckDB, Spark)."""
        spec = self._spec(table)
        manifest = self.manifest(spec, ds)
        if manifest is None:
            raise PartitionNotFound(f"table {spec.name!r} has no partition ds={ds} in {self.uri}")
        return [self.url(f"{spec.path}/ds={ds}/{f}") for f in manifest.files]

    def read_table(self, table: str | TableSpec, ds: str | list[str] | None = None) -> pa.Table:
        """Read one partition (``ds``), several (a list) or all of them (``None``), adding ``ds``."""
        spec = self._spec(table)
        dss = self.partitions(spec) if ds is None else [ds] if isinstance(ds, str) else list(ds)
        parts = list(self._read_partitions(spec, dss))
        if not parts:
            return spec.schema.empty_table().append_column("ds", pa.array([], pa.string()))
        return pa.concat_tables(parts)

    def _read_partitions(self, spec: TableSpec, dss: list[str]) -> Iterator[pa.Table]:
        for ds in dss:
            manifest = self.manifest(spec, ds)
            if manifest is None:
                raise PartitionNotFound(f"table {spec.name!r} has no partition ds={ds} in {self.uri}")
            for name in manifest.files:
                data = pq.read_table(io.BytesIO(self.get_bytes(f"{spec.path}/ds={ds}/{name}")))
                yield data.append_column("ds", pa.array([ds] * data.num_rows, pa.string()))


def read_release(lake: Lake) -> dict:
    """The current release (``{"ds", "published_at", "tables": {table: {ds: [keys]}}}``), or an empty
    one: what readers see (``visrec.publish`` switches it)."""
    if not lake.exists(RELEASE_KEY):
        return {"ds": None, "published_at": None, "tables": {}}
    return json.loads(lake.get_bytes(RELEASE_KEY))


def read_published(lake: Lake, release: dict, table: str, ds: str) -> pa.Table:
    """The rows of ``table`` for ``ds`` that ``release`` lists (its exact files, not the partition's
    newest version), in the table's schema, with a ``ds`` column; empty when it lists none."""
    schema = spec_for(table).schema
    parts = [
        pq.read_table(io.BytesIO(lake.get_bytes(key))).select(schema.names)
        for key in release["tables"].get(table, {}).get(ds, [])
    ]
    rows = pa.concat_tables(parts) if parts else schema.empty_table()
    return rows.append_column("ds", pa.array([ds] * rows.num_rows, pa.string()))


def published_dates(lake: Lake) -> set[str]:
    """Every date of which some table is in the current release."""
    return {ds for parts in read_release(lake)["tables"].values() for ds in parts}
