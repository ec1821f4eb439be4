"""Retention policies: the model, loading from YAML, and validation.

One YAML file per data category under ``include/retention_policies/``. Loading is
strict: unknown keys, wrong types, duplicate keys or ids, unparsable durations and
unsafe templates are refused with a ``PolicyError`` that names the file and the field.
Identifiers, keys and relations are checked against the real database schema separately
(``check_against_schema``), because only the running system knows its schema.
"""

from __future__ import annotations

import datetime as dt
import graphlib
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from retention import stores
from retention.deadlines import DeadlineRule
from retention.errors import PolicyError
from retention.locations import (
    AnyLocation,
    DatabaseLocation,
    FileLocation,
    Hop,
    Identifier,
    Location,
    S3Location,
    Strict,
    parse_path,
)
from retention.paths import placeholders
from retention.schema import ColumnInfo as ColumnInfo  # re-exported: callers built schemas from here
from retention.schema import SchemaInfo
from retention.subject import DEFAULT_SUBJECT, SUBJECT_FILE, SubjectFormat, subject_from

_DURATION = re.compile(r"^P(?:(?P<y>\d+)Y)?(?:(?P<m>\d+)M)?(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?$")


@dataclass(frozen=True)
class Period:
    """A calendar period (years, months, days); weeks are stored as days."""

    years: int = 0
    months: int = 0
    days: int = 0

    @classmethod
    def parse(cls, text: str) -> Period:
        """Parse an ISO-8601 date duration such as ``P5Y``, ``P18M``, ``P1Y6M``, ``P2W`` or ``P30D``."""
        m = _DURATION.match(text) if isinstance(text, str) else None
        if not m or text == "P":
            raise ValueError(f"{text!r} is not an ISO-8601 date duration such as P5Y, P18M or P30D")
        y, mo, w, d = (int(m.group(g) or 0) for g in ("y", "m", "w", "d"))
        period = cls(years=y, months=mo, days=d + 7 * w)
        if period.years == period.months == period.days == 0:
            raise ValueError("the period must be longer than zero")
        if period.years + (period.months + period.days / 31) / 12 > 100:
            raise ValueError("the period must be at most 100 years")
        return period

    def __str__(self) -> str:
        parts = [f"{n}{u}" for n, u in ((self.years, "Y"), (self.months, "M"), (self.days, "D")) if n]
        return "P" + "".join(parts)


Basis = Literal[
    "consent", "contract", "legal_obligation", "vital_interests", "public_task", "legitimate_interests"
]
"""The lawful basis of GDPR Art. 6(1), (a) to (f), machine-readable: what a request's reason acts on."""


class LegalBasis(Strict):
    basis: Basis
    """The lawful basis the category is processed under (the main one, where the article names two):
    withdrawing consent acts on ``consent`` categories, an objection on ``legitimate_interests`` ones."""
    gdpr: str = Field(min_length=6, pattern=r"^Art\. ?\d")
    """The GDPR article, e.g. ``Art. 6(1)(c)``."""
    national: str | None = None
    """The national law where one applies, e.g. ``Bogføringsloven § 10``."""


class Texts(Strict):
    """A text for people, in Danish (first) and English."""

    da: str = Field(min_length=3)
    en: str = Field(min_length=3)


class Retention(Strict):
    period: str | None = None
    """ISO-8601 date duration (``P5Y``); none for ``on_request_only``."""
    counts_from: Literal["event", "end_of_financial_year", "on_request_only"]
    """``on_request_only``: the category has no retention clock; the nightly run skips it and
    only a customer's request erases it."""
    event: str = Field(min_length=3)
    """Human description of the event the period counts from."""
    anchor: Identifier | None = None
    """The column holding the event's date or timestamp: of the records table, or of the table
    ``anchor_via`` reaches (a parent's date for a table without one)."""
    anchor_via: list[str] | None = None
    """The join path from the records table to the table holding ``anchor`` (hops
    ``table.column -> table.column``, each a real foreign key)."""
    financial_year_start: str = Field(default="01-01", pattern=r"^(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$")
    anchor_time_zone: str | None = None
    """The zone an anchor of type ``timestamp without time zone`` is written in (an IANA name
    such as ``Europe/Copenhagen``). Such a column is refused without it: PostgreSQL would
    compare it in the session's zone, and rows could become due hours early. Unused for a
    date or a zone-aware timestamp."""

    @field_validator("anchor_time_zone")
    @classmethod
    def _zone(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                ZoneInfo(v)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"{v!r} is not a time zone name such as Europe/Copenhagen or UTC") from None
        return v

    @field_validator("period")
    @classmethod
    def _period(cls, v: str | None) -> str | None:
        if v is not None:
            Period.parse(v)
        return v

    @model_validator(mode="after")
    def _clock(self) -> Retention:
        if self.counts_from == "on_request_only":
            for name in ("period", "anchor", "anchor_via"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name}: does not go with counts_from on_request_only (no clock)")
            return self
        if self.period is None:
            raise ValueError(f"period: required for counts_from {self.counts_from}")
        if self.anchor is None:
            raise ValueError(f"anchor: required for counts_from {self.counts_from}")
        if self.anchor_via is not None:
            for i, hop in enumerate(self.anchor_via):
                try:
                    Hop.parse(hop)
                except ValueError as e:
                    raise ValueError(f"anchor_via[{i}]: {e}") from None
        return self

    @property
    def has_clock(self) -> bool:
        """False for a category that only a customer's request erases."""
        return self.counts_from != "on_request_only"

    @property
    def parsed_period(self) -> Period:
        if self.period is None:
            raise PolicyError("<policy>", "retention.period", "the category has no retention clock")
        return Period.parse(self.period)

    @property
    def fy_start(self) -> tuple[int, int]:
        month, day = self.financial_year_start.split("-")
        return int(month), int(day)


class Records(Strict):
    """The table whose rows are the category's records, and how they link to a customer."""

    table: Identifier
    key: Identifier
    """An ordered unique key (the primary key) used for batching by key ranges."""
    subject: Identifier
    """The column holding the customer (subject) id."""


class RequestRule(Strict):
    """What a customer's request does to a category's records: erase them now, or keep them by law."""

    action: Literal["erase", "keep_until_due"]
    law: str | None = None
    """Why records are kept (required for ``keep_until_due``), e.g. the Bookkeeping Act."""

    @model_validator(mode="after")
    def _law_for_keep(self) -> RequestRule:
        if self.action == "keep_until_due" and not self.law:
            raise ValueError("keep_until_due needs 'law': the law that requires keeping the records")
        return self


class ErasureRequest(RequestRule):
    """What a customer's request does to this category: an erasure request (GDPR Art. 17); a
    withdrawn consent or an objection, where the category is in their scope (``retention.scope``),
    does the same unless ``consent_withdrawn`` or ``objection`` says otherwise."""

    consent_withdrawn: RequestRule | None = None
    objection: RequestRule | None = None

    def rule(self, reason: str) -> RequestRule:
        """The rule for a request with ``reason`` (one of ``params.REASONS``)."""
        override = {"consent_withdrawn": self.consent_withdrawn, "objection": self.objection}.get(reason)
        return override or self

    def rules(self) -> list[RequestRule]:
        return [self, *(r for r in (self.consent_withdrawn, self.objection) if r is not None)]


class Cap(Strict):
    """Blast-radius cap: a plan above either limit waits for a human."""

    max_items: int = Field(gt=0)
    max_fraction: float = Field(gt=0, le=1)


class Policy(Strict):
    """One data category's retention policy."""

    id: Identifier
    description: str = Field(min_length=10)
    legal_basis: LegalBasis
    rationale: str = Field(min_length=20)
    retention: Retention
    records: Records
    erasure_request: ErasureRequest
    cap: Cap
    after: list[Identifier] = Field(default_factory=list)
    """Categories whose erasure must run before this one's (e.g. documents before their jobs)."""
    locations: list[Location] = Field(min_length=1)
    direct_marketing: bool = False
    """The category serves direct marketing: an objection (GDPR Art. 21(2)-(3)) always ends it."""
    purpose: Texts | None = None
    """Why the data is processed (the record of processing activities, the access report)."""
    personal_data: Texts | None = None
    """The kinds of personal data the category holds, in words (e.g. name, e-mail, the text sent)."""
    sources: Texts | None = None
    """Where the data comes from: the customer, or a named kind of third party."""
    deadline: DeadlineRule | None = None
    """A legal time limit on the records (the third-party notice, the answer to a request),
    checked daily by the ``privacy_deadlines`` DAG (``retention.watch``)."""

    @model_validator(mode="after")
    def _locations(self) -> Policy:
        db = [loc for loc in self.locations if isinstance(loc, DatabaseLocation)]
        rec = self.records.table
        if not any(loc.table == rec and loc.foreign_key is None and loc.via is None for loc in db):
            raise ValueError(f"locations must include the records table {rec!r} itself (store: database)")
        tables = [loc.table for loc in db]
        for table in tables:
            if tables.count(table) > 1:
                raise ValueError(f"table {table!r} appears in two database locations")
        for i, loc in enumerate(self.locations):
            if isinstance(loc, DatabaseLocation):
                _check_database_location(loc, i, rec)
            else:
                _check_file_location(loc, i, rec)
        return self

    @model_validator(mode="after")
    def _consistent(self) -> Policy:
        rec = self.records.table
        if self.retention.anchor_via is not None:
            try:
                parse_path(self.retention.anchor_via, rec, _last_table(self.retention.anchor_via))
            except ValueError as e:
                raise ValueError(f"retention.anchor_via: {e}") from None
        if not self.retention.has_clock and any(r.action != "erase" for r in self.erasure_request.rules()):
            raise ValueError("a category without a retention clock is erased on request only (action erase)")
        if self.id in self.after:
            raise ValueError("a category cannot run after itself")
        if self.records.key in (self.deadline.columns() if self.deadline else ()):
            raise ValueError("deadline: the records key cannot be one of the deadline's columns")
        return self

    def anchor_path(self) -> tuple[Hop, ...]:
        """The hops from the records table to the table holding the anchor (none: the records table)."""
        via = self.retention.anchor_via
        return () if via is None else parse_path(via, self.records.table, _last_table(via))

    def anchor_table(self) -> str:
        path = self.anchor_path()
        return path[-1].target if path else self.records.table

    def file_locations(self) -> list[FileLocation]:
        """The locations whose items the records name through a template."""
        return [loc for loc in self.locations if not isinstance(loc, DatabaseLocation)]

    def database_locations(self) -> list[DatabaseLocation]:
        return [loc for loc in self.locations if isinstance(loc, DatabaseLocation)]

    def locations_in(self, store: str) -> list[AnyLocation]:
        """The category's locations in ``store``, in file order except that the records table comes
        last: children and path tables are found through the records, so they go first."""
        found = [loc for loc in self.locations if loc.store == store]
        return sorted(
            found, key=lambda loc: isinstance(loc, DatabaseLocation) and loc.table == self.records.table
        )

    def stores(self) -> list[str]:
        """The stores this category touches, file stores first (the database row is their index)."""
        return stores.ordered({loc.store for loc in self.locations})


def _check_database_location(loc: DatabaseLocation, i: int, records_table: str) -> None:
    """The records table itself, a child (``foreign_key``) or a path (``via``) from the records table."""
    if loc.table == records_table:
        if loc.foreign_key is not None or loc.via is not None:
            raise ValueError("the records table takes no foreign_key or via")
        if loc.shared != "keep":
            raise ValueError(f"locations[{i}].shared: the records table's rows are not shared")
        return
    if loc.foreign_key is None and loc.via is None:
        raise ValueError(f"table {loc.table!r} needs 'foreign_key' (a child) or 'via' (a path)")
    if loc.via is not None:
        try:
            parse_path(loc.via, records_table, loc.table)
        except ValueError as e:
            raise ValueError(f"locations[{i}].via: {e}") from None


def _check_file_location(loc: FileLocation, i: int, records_table: str) -> None:
    """A template filled from the records, or from the rows a path (``via``) reaches from them."""
    if loc.via is not None:
        try:
            parse_path(loc.via, records_table, loc.naming_table(records_table))
        except ValueError as e:
            raise ValueError(f"locations[{i}].via: {e}") from None


def _last_table(hops: Sequence[str]) -> str:
    """The table a written path ends at (its last hop's target); '' if it cannot be read."""
    try:
        return Hop.parse(hops[-1]).target if hops else ""
    except ValueError:
        return ""


class _Kept(Strict):
    """A settings section with a ``keep`` period (ISO 8601, more than zero)."""

    keep: str

    @field_validator("keep")
    @classmethod
    def _keep(cls, v: str) -> str:
        Period.parse(v)
        return v


class AirflowMetadata(_Kept):
    """How long Airflow's own records of the DAGs that handle one customer (a run's conf with the
    customer id, its XCom, event-log entries, task logs) are kept: ``_airflow.yaml``."""

    keep: str = "P30D"
    """ISO-8601 period after a run's end; then ``retention_housekeeping`` removes its traces."""
    dags: list[Identifier] = Field(default_factory=lambda: ["customer_erasure", "customer_access_report"])
    """The DAGs whose runs carry a customer id."""
    rationale: str = (
        "A run's parameters hold the customer id; the receipt and the ledger are the lasting proof, "
        "so Airflow's copy is kept only as long as an operator may need it to follow up a run."
    )


class Tombstones(_Kept):
    """How long a completed erasure's tombstone (the customer id, encrypted) is kept so that the
    erasure can be replayed after a backup is restored: as long as the oldest backup is kept."""

    keep: str = "P90D"
    """ISO-8601 period after the erasure; then the tombstone itself is deleted."""
    rationale: str = (
        "A backup restored within its retention brings erased data back; the tombstone names whom to "
        "erase again. Once no backup older than the erasure can be restored, it has no purpose."
    )


class PseudonymKeys(_Kept):
    """The keys behind the ledger's and the receipts' customer references (keyed pseudonyms): one
    per calendar year (UTC) of the entries, destroyed ``keep`` after that year ends (crypto-shredding),
    after which no entry of the year can be linked to a customer id, even by enumerating ids."""

    period: Literal["year"] = "year"
    keep: str = "P5Y"
    """ISO-8601 period after the end of a key's year; then the key is destroyed."""
    rationale: str = (
        "The link from a ledger entry to a customer is needed as long as the proof of how their data "
        "was handled may be asked for (five years, as the privacy requests themselves); after that "
        "the entries stay as anonymous statistics."
    )


class Accountability(Strict):
    """How long the proof outlives the erasure: ``_accountability.yaml``."""

    tombstones: Tombstones = Tombstones()
    pseudonym_keys: PseudonymKeys = PseudonymKeys()


AIRFLOW_FILE = "_airflow.yaml"
ACCOUNTABILITY_FILE = "_accountability.yaml"
SETTINGS_FILES = (SUBJECT_FILE, AIRFLOW_FILE, ACCOUNTABILITY_FILE)
"""Files of the policy folder that are settings, not categories."""


@dataclass(frozen=True)
class PolicySet:
    """A validated set of policies, in the order their erasure must run."""

    policies: tuple[Policy, ...]
    sources: Mapping[str, str]
    """Policy id -> file name, for messages."""
    subject: SubjectFormat = DEFAULT_SUBJECT
    """The deployment's customer-id format (``_subject.yaml``, or the digits-only default)."""
    airflow: AirflowMetadata = AirflowMetadata()
    """How long Airflow keeps its records of the per-customer DAGs (``_airflow.yaml``, or the default)."""
    accountability: Accountability = Accountability()
    """How long tombstones and pseudonym keys are kept (``_accountability.yaml``, or the default)."""

    @property
    def hash(self) -> str:
        """SHA-256 of the canonical JSON of every policy and the id format: which rules applied."""
        payload = json.dumps(
            {
                "policies": [p.model_dump(mode="json") for p in self.policies],
                "subject": self.subject.model_dump(mode="json"),
                "airflow": self.airflow.model_dump(mode="json"),
                "accountability": self.accountability.model_dump(mode="json"),
            },
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()

    def get(self, category: str) -> Policy:
        for p in self.policies:
            if p.id == category:
                return p
        raise PolicyError("<policy set>", "id", f"no category {category!r}")

    @property
    def ids(self) -> list[str]:
        return [p.id for p in self.policies]


_M = TypeVar("_M", bound=Strict)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping with the same key twice."""


def _construct_mapping(
    loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False
) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _loc_to_field(loc: Sequence[int | str], data: Any) -> str:
    parts: list[str] = []
    node = data
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
            node = node[item] if isinstance(node, list) and item < len(node) else None
        elif item in stores.ORDER and parts and parts[-1].startswith("["):
            continue  # pydantic's discriminator tag, not a field of the file
        else:
            parts.append(("." if parts else "") + str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return "".join(parts) or "<document>"


_FIELD_PREFIX = re.compile(r"^([a-z_]+(?:\[\d+\])?(?:\.[a-z_]+(?:\[\d+\])?)*): (.+)$", re.S)


def _parse_yaml(text: str, file: str) -> Any:
    """The YAML document (duplicate keys refused); PolicyError naming ``file`` and the line."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "<yaml>"
        raise PolicyError(file, where, f"not valid YAML: {getattr(e, 'problem', None) or e}") from None


def parse_policy(text: str, file: str) -> Policy:
    """Parse and validate one policy document; raise ``PolicyError`` naming ``file`` and the field."""
    data = _parse_yaml(text, file)
    if not isinstance(data, dict):
        raise PolicyError(file, "<document>", "expected a mapping of policy fields")
    try:
        policy = Policy.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        field = _loc_to_field(err["loc"], data)
        msg = err["msg"].removeprefix("Value error, ")
        # A model validator that checks one field names it first: "anchor_via[0]: ...".
        named = _FIELD_PREFIX.match(msg)
        if named:
            field = named[1] if field == "<document>" else f"{field}.{named[1]}"
            msg = named[2]
        more = f" (and {len(e.errors()) - 1} more problem(s))" if len(e.errors()) > 1 else ""
        raise PolicyError(file, field, msg + more) from None
    stem = Path(file).stem
    if policy.id != stem:
        raise PolicyError(file, "id", f"must equal the file name {stem!r}, found {policy.id!r}")
    return policy


def load_policies(folder: str | Path) -> PolicySet:
    """Load every ``*.yaml`` in ``folder`` into a ``PolicySet`` ordered by ``after``; raise on a problem.

    Files whose name starts with ``_`` are not categories: ``_subject.yaml`` declares the
    customer-id format (``retention.subject``), ``_airflow.yaml`` how long Airflow keeps its
    records of the per-customer DAGs, ``_accountability.yaml`` how long tombstones and pseudonym
    keys are kept; any other such file is refused (a typo would otherwise
    be silently ignored).
    """
    root = Path(folder)
    found = sorted(root.glob("*.yaml")) + sorted(root.glob("*.yml"))
    files = [p for p in found if not p.name.startswith("_")]
    for extra in (p for p in found if p.name.startswith("_") and p.name not in SETTINGS_FILES):
        known = " and ".join(SETTINGS_FILES)
        raise PolicyError(extra.name, "<file>", f"unknown settings file (only {known} are known)")
    if not files:
        raise PolicyError(str(root), "<folder>", "no policy files (*.yaml) found")
    policies: list[Policy] = []
    sources: dict[str, str] = {}
    for path in files:
        policy = parse_policy(path.read_text(encoding="utf-8"), path.name)
        if policy.id in sources:
            raise PolicyError(path.name, "id", f"duplicate id {policy.id!r}, also in {sources[policy.id]}")
        sources[policy.id] = path.name
        policies.append(policy)
    subject_path = root / SUBJECT_FILE
    subject = DEFAULT_SUBJECT
    if subject_path.exists():
        subject = subject_from(_parse_yaml(subject_path.read_text(encoding="utf-8"), SUBJECT_FILE))
    airflow = _settings(AirflowMetadata, root / AIRFLOW_FILE)
    accountability = _settings(Accountability, root / ACCOUNTABILITY_FILE)
    return PolicySet(tuple(_order(policies, sources)), sources, subject, airflow, accountability)


def _settings(model: type[_M], path: Path) -> _M:
    """A settings file parsed into its model (its defaults when absent); ``PolicyError`` names the field."""
    if not path.exists():
        return model()
    doc = _parse_yaml(path.read_text(encoding="utf-8"), path.name)
    try:
        return model.model_validate(doc)
    except ValidationError as e:
        err = e.errors()[0]
        raise PolicyError(path.name, _loc_to_field(err["loc"], doc), err["msg"]) from None


def _order(policies: Iterable[Policy], sources: Mapping[str, str]) -> list[Policy]:
    """The policies in an order where each comes after every category it names in ``after``.

    Ties are broken by id, so the order does not depend on file-system listing order.
    """
    by_id = {p.id: p for p in policies}
    for p in by_id.values():
        for dep in p.after:
            if dep not in by_id:
                raise PolicyError(sources[p.id], "after", f"unknown category {dep!r}")
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for pid in sorted(by_id):
        sorter.add(pid, *by_id[pid].after)
    try:
        sorter.prepare()
    except graphlib.CycleError as e:
        cycle = list(reversed(e.args[1]))
        raise PolicyError(sources[cycle[0]], "after", "circular order: " + " -> ".join(cycle)) from None
    ordered: list[Policy] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready())
        ordered.extend(by_id[pid] for pid in ready)
        sorter.done(*ready)
    return ordered


def check_against_schema(policy_set: PolicySet, schema: SchemaInfo) -> None:
    """Refuse any table, column or relation a policy names that the live schema does not have.

    ``schema`` is the running database's schema (see
    ``retention.adapters.database.reflect_schema``): every table, not only the named ones.
    Besides names, it refuses what the database would only reject (or worse, carry out)
    mid-run:

    - the ``null`` strategy on a NOT NULL column;
    - a ``records.key`` that is not the single-column primary key, or a single-column UNIQUE
      constraint or unique index on a NOT NULL column (batches are ranges of that key);
    - a child location whose ``foreign_key`` is not a real single-column foreign-key constraint
      to ``records.table(records.key)`` (the erase would follow a relation the database does
      not have, and erase other customers' rows);
    - an identity type of ``_subject.yaml`` whose table or columns do not exist;
    - a delete that cascades (``ON DELETE CASCADE``, followed on) or sets NULL or a default
      (``SET NULL`` / ``SET DEFAULT``) into a table no policy names in a database location:
      that table's data would change without a policy, a ledger entry or a verification.
    """
    named = {loc.table for p in policy_set.policies for loc in p.database_locations()}
    for policy in policy_set.policies:
        file = policy_set.sources[policy.id]
        _check_records(policy, schema, file)
        _check_deadline(policy, schema, file)
        _check_cycles(policy, schema, file)
        for i, loc in enumerate(policy.locations):
            where = f"locations[{i}]"
            if isinstance(loc, DatabaseLocation):
                _check_table_location(policy, loc, schema, file, where)
                if loc.action == "delete":
                    _check_cascades(loc.table, schema, named, file, f"{where}.action")
            else:
                field = f"{where}.{'key' if isinstance(loc, S3Location) else 'path'}"
                check_path(loc.hops(policy.records.table), schema, file, f"{where}.via")
                table = loc.naming_table(policy.records.table)
                for name in placeholders(loc.template):
                    _need_column(schema.columns(table), table, name, file, field)
    for i, identity in enumerate(policy_set.subject.identities):
        where = f"identities[{i}]"
        _need_table(schema, identity.table, SUBJECT_FILE, f"{where}.table")
        for field in ("column", "subject"):
            column = getattr(identity, field)
            _need_column(
                schema.columns(identity.table), identity.table, column, SUBJECT_FILE, f"{where}.{field}"
            )


def _check_deadline(policy: Policy, schema: SchemaInfo, file: str) -> None:
    """The deadline's columns are columns of the records table; the times are dates or timestamps."""
    rule = policy.deadline
    if rule is None:
        return
    table = policy.records.table
    cols = schema.columns(table)
    named = {"received": rule.received, "done": rule.done}
    if rule.extension is not None:
        named |= {"extension.at": rule.extension.at, "extension.reason": rule.extension.reason}
    for field, column in named.items():
        _need_column(cols, table, column, file, f"deadline.{field}")
        if field != "extension.reason" and not _is_temporal(cols[column].type):
            problem = f"column {table}.{column} is not a date or timestamp"
            raise PolicyError(file, f"deadline.{field}", problem)


def _check_records(policy: Policy, schema: SchemaInfo, file: str) -> None:
    """The records table, its key (unique and not null), subject and anchor (a date or timestamp)."""
    rec = policy.records
    _need_table(schema, rec.table, file, "records.table")
    cols = schema.columns(rec.table)
    for field, col in (("records.key", rec.key), ("records.subject", rec.subject)):
        _need_column(cols, rec.table, col, file, field)
    problem = schema.key_problem(rec.table, rec.key)
    if problem:
        raise PolicyError(
            file, "records.key", f"column {rec.table}.{rec.key} is not a unique, not-null key: {problem}"
        )
    anchor = policy.retention.anchor
    if anchor is None:
        return
    check_path(policy.anchor_path(), schema, file, "retention.anchor_via")
    table = policy.anchor_table()
    _need_column(schema.columns(table), table, anchor, file, "retention.anchor")
    anchor_type = schema.columns(table)[anchor].type
    if not _is_temporal(anchor_type):
        raise PolicyError(file, "retention.anchor", f"column {table}.{anchor} is not a date or timestamp")
    zone_types = schema.dialect != "sqlite"  # SQLite has no timestamp type: its text counts as UTC
    if zone_types and is_naive_timestamp(anchor_type) and policy.retention.anchor_time_zone is None:
        raise PolicyError(
            file,
            "retention.anchor",
            f"column {table}.{anchor} is a timestamp without time zone: declare the zone its values "
            "are written in as retention.anchor_time_zone (e.g. Europe/Copenhagen or UTC)",
        )


def _check_table_location(
    policy: Policy, loc: DatabaseLocation, schema: SchemaInfo, file: str, where: str
) -> None:
    """A database location: its table, its path (each hop a real constraint) and its fields."""
    _need_table(schema, loc.table, file, f"{where}.table")
    cols = schema.columns(loc.table)
    rec = policy.records
    if loc.foreign_key:
        field = f"{where}.foreign_key"
        _need_column(cols, loc.table, loc.foreign_key, file, field)
        if schema.foreign_key(loc.table, loc.foreign_key, rec.table, rec.key) is None:
            others = schema.references_from(loc.table, loc.foreign_key)
            found = f"; it has {', '.join(fk.describe(loc.table) for fk in others)}" if others else ""
            raise PolicyError(
                file,
                field,
                f"no foreign key constraint {loc.table}.{loc.foreign_key} -> {rec.table}.{rec.key} "
                f"in the database{found}",
            )
    if loc.via is not None:
        links = check_path(loc.hops(rec.table, rec.key), schema, file, f"{where}.via")
        if loc.action == "delete" and links[-1].direction == "parent":
            raise PolicyError(
                file,
                f"{where}.action",
                f"rows of {loc.table} are referenced by the path's {links[-1].hop.source} rows "
                f"({links[-1].constraint}): they cannot be deleted while those rows stay; use anonymise",
            )
    for name, rule in loc.fields.items():
        field = f"{where}.fields.{name}"
        _need_column(cols, loc.table, name, file, field)
        if rule.strategy == "null" and not cols[name].nullable:
            raise PolicyError(file, field, f"column {loc.table}.{name} is NOT NULL: use redact or fixed")


@dataclass(frozen=True)
class Link:
    """One hop of a path as the live schema backs it: the constraint and which way it points."""

    hop: Hop
    constraint: str
    """The foreign key, as ``child.col -> parent.col``."""
    direction: Literal["child", "parent"]
    """``child``: the hop's target rows reference its source rows (a parent -> child step);
    ``parent``: the source rows reference the target rows (a child -> parent step)."""

    def describe(self) -> str:
        return f"{self.hop} (to the {self.direction} rows, by constraint {self.constraint})"


def check_path(hops: Sequence[Hop], schema: SchemaInfo, file: str, field: str) -> list[Link]:
    """Each hop's tables and columns exist and a real single-column foreign key links them."""
    links: list[Link] = []
    for i, hop in enumerate(hops):
        where = f"{field}[{i}]"
        for table, column in ((hop.source, hop.source_column), (hop.target, hop.target_column)):
            _need_table(schema, table, file, where)
            _need_column(schema.columns(table), table, column, file, where)
        found = schema.link(hop.source, hop.source_column, hop.target, hop.target_column)
        if found is not None:
            direction, fk = found
            links.append(
                Link(hop, fk.describe(hop.target if direction == "child" else hop.source), direction)
            )
        else:
            raise PolicyError(
                file,
                where,
                f"no foreign key constraint links {hop.source}.{hop.source_column} and "
                f"{hop.target}.{hop.target_column} (in either direction) in the database",
            )
    return links


def explain_paths(policy_set: PolicySet, schema: SchemaInfo) -> list[str]:
    """One line per resolved path hop (``make validate``): which constraint backs it."""
    lines: list[str] = []
    for policy in policy_set.policies:
        file = policy_set.sources[policy.id]
        rec = policy.records
        paths: list[tuple[str, Sequence[Hop]]] = []
        for i, loc in enumerate(policy.locations):
            if isinstance(loc, DatabaseLocation) and loc.table != rec.table:
                paths.append((f"locations[{i}]", loc.hops(rec.table, rec.key)))
            elif not isinstance(loc, DatabaseLocation) and loc.via:
                paths.append((f"locations[{i}]", loc.hops(rec.table)))
        if policy.retention.anchor_via is not None:
            paths.append(("retention.anchor_via", policy.anchor_path()))
        for where, hops in paths:
            for link in check_path(hops, schema, file, where):
                lines.append(f"{policy.id} {where}: {link.describe()}")
    return lines


def _check_cycles(policy: Policy, schema: SchemaInfo, file: str) -> None:
    """Refuse deletes from tables whose rows reference each other (a row of a table referencing
    another row of it, or two tables referencing each other) through constraints that keep the
    referencing rows: no order of deletes can succeed once two due rows reference each other."""
    where = {loc.table: i for i, loc in enumerate(policy.locations) if isinstance(loc, DatabaseLocation)}
    deleted = {loc.table for loc in policy.database_locations() if loc.action == "delete"}
    graph: dict[str, set[str]] = {t: set() for t in deleted}
    constraint: dict[tuple[str, str], str] = {}
    for parent in sorted(deleted):
        for child, fk in schema.referencing(parent):
            if child in deleted and not fk.changes_rows:
                graph[child].add(parent)
                constraint.setdefault((child, parent), f"{fk.describe(child)} ON DELETE {fk.ondelete}")
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as e:
        cycle: list[str] = e.args[1]
        links = ", ".join(constraint[(a, b)] for a, b in zip(cycle, cycle[1:], strict=False))
        raise PolicyError(
            file,
            f"locations[{where[cycle[0]]}].action",
            f"rows of {' and '.join(sorted(set(cycle)))} may reference each other ({links}): once two "
            "due rows do, no order of deletes succeeds. Anonymise instead of deleting, or make one "
            "constraint ON DELETE SET NULL",
        ) from None


def _check_cascades(table: str, schema: SchemaInfo, named: set[str], file: str, field: str) -> None:
    """Refuse a delete from ``table`` that deletes or changes rows of a table no policy names."""
    for cascade in schema.cascades(table):
        affected = cascade.chain[-1]
        if affected in named:
            continue
        rule = f"ON DELETE {cascade.via.ondelete} of {cascade.via.describe(affected)}"
        raise PolicyError(
            file,
            field,
            f"deleting from {table} cascades to {cascade.describe()}, which no policy names "
            f"in a database location ({rule}): name {affected} in a policy or change the constraint",
        )


def _need_table(schema: SchemaInfo, table: str, file: str, field: str) -> None:
    if table not in schema:
        raise PolicyError(file, field, f"table {table!r} does not exist in the database")


def _need_column(cols: Mapping[str, Any], table: str, column: str, file: str, field: str) -> None:
    if column not in cols:
        raise PolicyError(file, field, f"column {column!r} does not exist in table {table!r}")


def is_naive_timestamp(sqltype: Any) -> bool:
    """A timestamp type without a time zone, in a database that has zone-aware ones.

    SQLite has no timestamp type at all: SQLAlchemy writes a datetime as text, UTC when the
    value was UTC (the reference world and the demo), so there it counts as UTC unless the
    policy declares ``anchor_time_zone``.
    """
    from sqlalchemy.dialects import sqlite

    return (
        isinstance(sqltype, sa.DateTime)
        and not getattr(sqltype, "timezone", False)
        and not isinstance(sqltype, sqlite.DATETIME)
    )


def _is_temporal(sqltype: Any) -> bool:
    try:
        return issubclass(sqltype.python_type, (dt.date, dt.datetime))
    except (NotImplementedError, AttributeError):
        return False
