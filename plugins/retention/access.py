"""The access report (GDPR Art. 15, with a portable copy for Art. 20): what is held about one customer.

``make_report`` walks the policies for one customer (a ``RunContext`` in subject mode) and writes,
per category, its purpose, personal data, sources (the policy's ``purpose``, ``personal_data``
and ``sources``; "not declared" where a policy leaves one out), lawful basis and retention period
in words, and what it holds about the customer:

- the database rows of every location: the records table by the customer id, child tables by
  their foreign key, ``via`` tables through their join path; every column as stored. A path's
  row that another customer's row (or another table) references too is listed, marked shared;
  nothing is reached through another customer's records;
- the S3 object versions the customer's records name (key, version id, size, date; delete markers
  noted), one listing per named key or prefix;
- the archive (and share) files they name (path, size, date), without following links.

Every record is held regardless of its due date or a legal hold (the report says what is held,
not what may go). Queries start from the customer id (the subject column's index) and listings
from the keys the customer's records name: the cost follows the customer's data, never the size
of a store, and every document is written to a temporary file as the walk goes, so memory stays
flat. Files named by another customer's records too are marked shared.

The outputs, report.json (machine-readable), rapport.md (Danish), report.md (English) and, on
request, files.zip (the objects' current versions and the archive files), go to the receipts
bucket under ``access-reports/<random id>/``: never the customer id or the request reference in
a key. The report is personal data itself, so it has a retention policy of its own
(``access_reports``: a row per report in the business database, whose random id names its objects,
``access-reports/{report_id}/``); the row is written before the objects, so even a half-written
report expires. The
ledger records that a report was made: counts per category and store, the SHA-256 of the JSON
and the customer's pseudonym, never a path or a value.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
import string
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from retention.access_files import (
    LocalFs,
    TreeFs,
    TreeReader,
    ZipOut,
    object_chunks,
    s3_versions,
    with_shared,
)
from retention.access_files import zip_name as _zip_name
from retention.access_render import (
    Header,
    Item,
    JsonWriter,
    MarkdownWriter,
    ObjectVersion,
    Place,
    Row,
    Tally,
    Totals,
    TreeFile,
    Writer,
)
from retention.adapters.base import HoldSet, Record
from retention.adapters.database import RowSelection
from retention.adapters.s3 import group_listings
from retention.clock import until_for
from retention.dberrors import db_errors
from retention.engine import RunContext, selection_for
from retention.errors import PolicyError, TerminalError, UnsafeTargetError
from retention.ledger import LedgerEntry
from retention.locations import AnyLocation, DatabaseLocation, FileLocation, S3Location
from retention.paths import is_prefix, placeholders, render
from retention.policy import Policy
from retention.subject import SubjectFormat

REPORTS_CATEGORY = "access_reports"
"""The category whose policy keeps (and erases) the access reports themselves."""
REPORTS_PREFIX = "access-reports"
"""Where in the receipts bucket the reports go: ``access-reports/<random id>/``."""
RECEIPTS_POLICY_BUCKET = "alleskar-privacy-receipts"
"""The name the ``access_reports`` policy gives the receipts bucket (the default ``receipts_bucket``)."""
DOCUMENTS = ("report.json", "rapport.md", "report.md")
ZIP_FILE = "files.zip"
_CONTENT_TYPES = {
    "report.json": "application/json",
    "rapport.md": "text/markdown; charset=utf-8",
    "report.md": "text/markdown; charset=utf-8",
    ZIP_FILE: "application/zip",
}
_REQUEST_REF = re.compile(r"PR-[0-9]{4}-[0-9]{4,6}")
_ID_LENGTH = 26
"""Letters of a report's random id: about 122 bits, and no digit run the ledger's guard would refuse."""
_SHARED_CHUNK = 500
"""Keys per look-up of the records that name them (one indexed query per naming location)."""


def bucket_map_with_receipts(bucket_map: Mapping[str, str], receipts_bucket: str) -> dict[str, str]:
    """``bucket_map`` with the reports' policy bucket mapped to the deployment's receipts bucket, unless
    ``bucket_map`` maps that name itself (so the nightly run erases the reports where they are written)."""
    return {RECEIPTS_POLICY_BUCKET: receipts_bucket, **bucket_map}


def check_access_params(params: Mapping[str, Any], subject_format: SubjectFormat) -> None:
    """Refuse anything but a customer id of the deployment's format, a request reference and a boolean
    ``include_contents`` (``TerminalError`` naming the parameter and the problem, never the value)."""
    subject_format.check(params.get("customer_id"), "customer_id")
    ref = params.get("request_ref")
    if not isinstance(ref, str) or not _REQUEST_REF.fullmatch(ref):
        raise TerminalError("request_ref must look like PR-2026-00042")
    if not isinstance(params.get("include_contents", False), bool):
        raise TerminalError("include_contents must be true or false")


@dataclass(frozen=True)
class ReportsPolicy:
    """The policy that keeps the access reports: its records table and the S3 prefix its rows name."""

    policy: Policy
    location: S3Location
    id_column: str
    """The records table's column holding a report's random id: its objects are ``access-reports/<id>/``."""


def reports_policy(ctx: RunContext, bucket: str) -> ReportsPolicy:
    """The ``access_reports`` policy, checked to erase what ``make_report`` writes to ``bucket``.

    Without it (or with its bucket mapped elsewhere) a report would never expire: refused.
    """
    try:
        policy = ctx.policies.get(REPORTS_CATEGORY)
    except PolicyError:
        raise TerminalError(
            f"the policy set has no {REPORTS_CATEGORY} category: an access report would have no retention"
        ) from None
    found = [loc for loc in policy.file_locations() if isinstance(loc, S3Location)]
    if len(found) != 1 or found[0].via or len(policy.file_locations()) != 1:
        raise TerminalError(f"{REPORTS_CATEGORY}: needs exactly one file location, in S3 (no via)")
    loc = found[0]
    names = placeholders(loc.key)
    if len(names) != 1 or loc.key != f"{REPORTS_PREFIX}/{{{names[0]}}}/":
        raise TerminalError(
            f"{REPORTS_CATEGORY}: the S3 key must be {REPORTS_PREFIX}/, a column and a slash, "
            f"e.g. {REPORTS_PREFIX}/{{report_id}}/"
        )
    real = ctx.bucket_map.get(loc.bucket, loc.bucket)
    if real != bucket:
        raise TerminalError(
            f"{REPORTS_CATEGORY}: its bucket {loc.bucket!r} is not mapped to the receipts bucket {bucket!r} "
            "(setting bucket_map): the reports would never be erased"
        )
    if policy.retention.anchor is None or policy.retention.anchor_via:
        raise TerminalError(f"{REPORTS_CATEGORY}: the anchor must be a column of its records table")
    return ReportsPolicy(policy, loc, names[0])


def prepare(ctx: RunContext, bucket: str) -> dict[str, Any]:
    """Check before anything is read: the customer id in the deployment's format, the policies against
    the live schema, and the reports' own policy; return the policy set's hash and size (no personal data)."""
    from retention.flow import check_policies

    _need_subject(ctx)
    check_policies(ctx)
    reports_policy(ctx, bucket)
    return {"policy_set_hash": ctx.policies.hash, "categories": len(ctx.policies.ids)}


def _need_subject(ctx: RunContext) -> str:
    if ctx.mode != "subject" or ctx.subject is None:
        raise TerminalError("an access report is made for one customer (subject mode)")
    ctx.policies.subject.check(ctx.subject, "customer id")
    return ctx.subject


@dataclass(frozen=True)
class FileClients:
    """The raw clients the report reads the file stores with."""

    s3: Any = None
    """A boto3 S3 client (the documents' buckets)."""
    trees: Mapping[str, TreeFs] = field(default_factory=dict)
    """Tree store -> its client (``sftp``: a paramiko ``SFTPClient``); ``filesystem``: ``LocalFs``."""


@dataclass(frozen=True)
class ReportOutput:
    """Where the report goes: the receipts bucket, through a boto3 S3 client."""

    client: Any
    bucket: str


@dataclass(frozen=True)
class AccessReport:
    """Where a report was stored and what it counted (what XCom and the ledger may carry)."""

    bucket: str
    prefix: str
    """``access-reports/<random id>/``."""
    files: tuple[str, ...]
    counts: Mapping[str, Mapping[str, int]]
    """Category -> store -> items listed."""
    items: int
    shared: int
    sha256: str
    """Of report.json as stored."""

    def summary(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "prefix": self.prefix,
            "files": list(self.files),
            "counts": {c: dict(s) for c, s in self.counts.items()},
            "items": self.items,
            "shared": self.shared,
            "sha256": self.sha256,
        }


def make_report(
    ctx: RunContext,
    request_ref: str,
    *,
    output: ReportOutput,
    clients: FileClients,
    include_contents: bool = False,
) -> AccessReport:
    """Make one customer's access report, store it under a new random prefix, record it; see the module."""
    subject = _need_subject(ctx)
    if not _REQUEST_REF.fullmatch(request_ref):
        raise TerminalError("request_ref must look like PR-2026-00042")
    if ctx.ledger is None:
        raise TerminalError("an access report is recorded in the ledger: the context has none")
    reports = reports_policy(ctx, output.bucket)
    header = Header(
        request_ref=request_ref,
        customer_id=subject,
        subject_ref=ctx.subject_ref or "",
        made_at=ctx.now,
        available_until=until_for(reports.policy.retention, ctx.now),
        policy_set_hash=ctx.policies.hash,
        contents=include_contents,
    )
    report_id = "".join(secrets.choice(string.ascii_lowercase) for _ in range(_ID_LENGTH))
    prefix = f"{REPORTS_PREFIX}/{report_id}/"
    with tempfile.TemporaryDirectory(prefix="access-report-") as tmp:
        folder = Path(tmp)
        totals, digest, files = _write_documents(ctx, folder, header, clients, include_contents)
        # The row first: whatever reaches the bucket from here on is named by it and expires with it.
        _register(ctx, reports, request_ref, report_id)
        for name in files:
            with (folder / name).open("rb") as f:
                output.client.upload_fileobj(
                    f, output.bucket, prefix + name, ExtraArgs={"ContentType": _CONTENT_TYPES[name]}
                )
    ctx.ledger.append(
        LedgerEntry(
            run_id=ctx.run_id,
            category=REPORTS_CATEGORY,
            store="*",
            action="access_report",
            outcome="summary",
            count=totals.items,
            items_digest=digest,
            subject_ref=ctx.subject_ref,
            policy_set_hash=ctx.policies.hash,
            detail=_ledger_detail(totals, include_contents, len(files)),
        )
    )
    return AccessReport(
        bucket=output.bucket,
        prefix=prefix,
        files=files,
        counts=totals.counts,
        items=totals.items,
        shared=totals.shared,
        sha256=digest,
    )


def _ledger_detail(totals: Totals, contents: bool, files: int) -> dict[str, Any]:
    counts = {c: {s: n for s, n in stores.items() if n} for c, stores in totals.counts.items()}
    detail: dict[str, Any] = {
        "counts": {c: s for c, s in counts.items() if s},
        "shared": totals.shared,
        "not_listed": totals.not_listed,
        "contents": contents,
        "files": files,
    }
    if len(repr(detail)) > 3000:  # many categories: the totals per store still fit
        per_store: dict[str, int] = {}
        for stores in counts.values():
            for store, n in stores.items():
                per_store[store] = per_store.get(store, 0) + n
        detail["counts"] = {"*": per_store}
    return detail


def _register(ctx: RunContext, reports: ReportsPolicy, request_ref: str, report_id: str) -> None:
    """The report's row in the business database: whom it is for, when it was made available, its id."""
    rec = reports.policy.records
    db = ctx.database
    table = db.table(rec.table)
    subject_col = db.column(rec.table, rec.subject)
    subject: Any = ctx.subject
    if subject_col.type.python_type is int:
        subject = int(str(ctx.subject))
    values: dict[str, Any] = {
        rec.subject: subject,
        reports.policy.retention.anchor or "": ctx.now,
        reports.id_column: report_id,
    }
    if "request_ref" in table.c:
        values["request_ref"] = request_ref
    with db_errors("recording the access report"), db.engine.begin() as conn:
        conn.execute(table.insert().values(**values))


# -- the walk -------------------------------------------------------------------------------------


class _Fanout:
    """Every writer gets every event."""

    def __init__(self, writers: Sequence[Writer]) -> None:
        self.writers = writers

    def category(self, policy: Policy) -> None:
        for w in self.writers:
            w.category(policy)

    def location(self, place: Place) -> None:
        for w in self.writers:
            w.location(place)

    def item(self, item: Item) -> None:
        for w in self.writers:
            w.item(item)

    def end_location(self, tally: Tally) -> None:
        for w in self.writers:
            w.end_location(tally)

    def end_category(self) -> None:
        for w in self.writers:
            w.end_category()

    def close(self, totals: Totals) -> None:
        for w in self.writers:
            w.close(totals)


def _write_documents(
    ctx: RunContext, folder: Path, header: Header, clients: FileClients, include_contents: bool
) -> tuple[Totals, str, tuple[str, ...]]:
    """Walk the policies into the report's files in ``folder``; (totals, the JSON's digest, file names)."""
    with ExitStack() as stack:
        outs = [stack.enter_context((folder / name).open("wb")) for name in DOCUMENTS]
        json_writer = JsonWriter(outs[0], header)
        writers = _Fanout(
            [json_writer, MarkdownWriter(outs[1], header, "da"), MarkdownWriter(outs[2], header, "en")]
        )
        archive = ZipOut(str(folder / ZIP_FILE)) if include_contents else None
        if archive is not None:
            stack.callback(archive.close)
        walk = _Walk(ctx, clients, archive)
        totals = Totals()
        for policy in ctx.policies.policies:
            writers.category(policy)
            for loc in _report_order(policy):
                tally = Tally()
                writers.location(Place(loc.store, loc.label(), getattr(loc, "table", None)))
                for item in walk.items(policy, loc, tally):
                    tally.add(item)
                    writers.item(item)
                    walk.contents(policy, loc, item)
                writers.end_location(tally)
                totals.add(policy.id, loc.store, tally)
            writers.end_category()
        writers.close(totals)
    files = DOCUMENTS + ((ZIP_FILE,) if include_contents else ())
    return totals, json_writer.sha256, files


def _report_order(policy: Policy) -> list[AnyLocation]:
    """The records table first, then the other tables, then the files, each in the policy's order."""
    db = policy.database_locations()
    records = [loc for loc in db if loc.table == policy.records.table]
    return [*records, *(loc for loc in db if loc not in records), *policy.file_locations()]


def access_selection(policy: Policy, ctx: RunContext) -> RowSelection:
    """Every record of the customer in this category: no age, no exclusions (holds are never applied here)."""
    return dataclasses.replace(
        selection_for(policy, ctx), cutoff=None, not_due=False, never_due=False, excluded=frozenset()
    )


class _Walk:
    """The items of each location, and their contents for files.zip."""

    def __init__(self, ctx: RunContext, clients: FileClients, archive: ZipOut | None) -> None:
        self.ctx = ctx
        self.clients = clients
        self.archive = archive
        self._trees: dict[str, TreeReader] = {}

    def items(self, policy: Policy, loc: AnyLocation, tally: Tally) -> Iterator[Item]:
        sel = access_selection(policy, self.ctx)
        if isinstance(loc, DatabaseLocation):
            hops = loc.hops(sel.table, sel.key)
            for batch in self.ctx.database.iter_reached_rows(sel, hops, mark_shared=loc.via is not None):
                for columns, shared in batch:
                    yield Row(columns, shared)
        elif isinstance(loc, S3Location):
            yield from self._objects(sel, loc, tally)
        else:
            yield from self._files(sel, loc, tally)

    def _named(self, sel: RowSelection, loc: FileLocation, tally: Tally) -> Iterator[list[str]]:
        """The keys or paths the customer's records name, a record batch at a time (unsafe ones counted)."""
        db = self.ctx.database
        hops = loc.hops(sel.table)
        names = placeholders(loc.template)
        batches = db.iter_path_records(sel, hops, names) if hops else db.iter_records(sel, names)
        for records in batches:
            yield sorted(_rendered(loc.template, records, tally))

    def _objects(self, sel: RowSelection, loc: S3Location, tally: Tally) -> Iterator[ObjectVersion]:
        if self.clients.s3 is None:
            raise TerminalError("the access report needs an S3 client: a policy keeps data in S3")
        bucket = self.ctx.bucket_map.get(loc.bucket, loc.bucket)
        exact = not is_prefix(loc.key)
        listed: set[str] = set()
        seen: set[tuple[str, str]] = set()
        for keys in self._named(sel, loc, tally):
            for listing in group_listings((k, None) for k in keys):
                if listing.prefix in listed:
                    continue
                listed.add(listing.prefix)
                found = (
                    v
                    for v in s3_versions(self.clients.s3, bucket, listing.prefix)
                    if listing.named_by(v.key, exact) and (v.key, v.version_id) not in seen
                )
                for chunk in _chunks(found, _SHARED_CHUNK):
                    seen.update((v.key, v.version_id) for v in chunk)
                    yield from with_shared(chunk, self._shared(loc, {v.key for v in chunk}), "key")

    def _files(self, sel: RowSelection, loc: FileLocation, tally: Tally) -> Iterator[TreeFile]:
        reader = self._tree(loc.store)
        seen: set[str] = set()
        for paths in self._named(sel, loc, tally):
            found = (f for f in reader.files(paths, is_prefix(loc.template)) if f.path not in seen)
            for chunk in _chunks(found, _SHARED_CHUNK):
                seen.update(f.path for f in chunk)
                yield from with_shared(chunk, self._shared(loc, {f.path for f in chunk}), "path")

    def _tree(self, store: str) -> TreeReader:
        if store not in self._trees:
            fs = self.clients.trees.get(store) or (LocalFs() if store == "filesystem" else None)
            root = self.ctx.roots.get(store)
            if fs is None or not root:
                raise TerminalError(
                    f"the access report needs a {store} client and root: a policy keeps data there"
                )
            self._trees[store] = TreeReader(fs, root, store)
        return self._trees[store]

    def _shared(self, loc: FileLocation, keys: set[str]) -> frozenset[str]:
        """Of ``keys``, those that a record of another customer (or a row no record reaches) names too,
        through any location of any category in the same bucket or root."""
        if not keys:
            return frozenset()
        place = _place(loc, self.ctx)
        shared: set[str] = set()
        for policy in self.ctx.policies.policies:
            for other in policy.file_locations():
                if _place(other, self.ctx) != place:
                    continue
                sel = access_selection(policy, self.ctx)
                shared |= self.ctx.database.naming_not_erasable(
                    sel, HoldSet(), other.template, sorted(keys), other.hops(sel.table)
                )
        return frozenset(shared)

    def contents(self, policy: Policy, loc: AnyLocation, item: Item) -> None:
        """Put a current object version or a regular archive file into files.zip (not the reports' own)."""
        if self.archive is None or policy.id == REPORTS_CATEGORY:
            return
        if isinstance(item, ObjectVersion) and isinstance(loc, S3Location):
            if item.latest and not item.delete_marker:
                bucket = self.ctx.bucket_map.get(loc.bucket, loc.bucket)
                chunks = object_chunks(self.clients.s3, bucket, item)
                self.archive.add(_zip_name("s3", loc.bucket, item.key), item.last_modified, chunks)
        elif isinstance(item, TreeFile) and not item.link:
            reader = self._tree(loc.store)
            self.archive.add(_zip_name(loc.store, item.path), item.modified, reader.chunks(item))


def _rendered(template: str, records: Sequence[Record], tally: Tally) -> set[str]:
    """The keys or paths ``records`` name through ``template``; a record that renders unsafely names none."""
    out: set[str] = set()
    for record in records:
        try:
            out.add(render(template, record))
        except UnsafeTargetError:
            tally.not_listed += 1
    return out


def _place(loc: FileLocation, ctx: RunContext) -> tuple[str, str]:
    """Where a location's items live: a store and its real bucket or root."""
    if isinstance(loc, S3Location):
        return loc.store, ctx.bucket_map.get(loc.bucket, loc.bucket)
    return loc.store, ctx.roots.get(loc.store, "")


def _chunks(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    items = iter(items)
    while chunk := list(islice(items, size)):
        yield chunk
