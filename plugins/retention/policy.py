"""Retention policies: the model, loading from YAML, and validation.

One YAML file per data category under ``include/retention_policies/``. Loading is
strict: unknown keys, wrong types, duplicate keys or ids, unparsable durations and
unsafe templates are refused with a ``PolicyError`` that names the file and the field.
Identifiers are checked against the real database schema separately
(``check_against_schema``), because only the running system knows its schema.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from retention.errors import PolicyError, UnsafeTargetError
from retention.paths import check_relative, placeholders

_IDENT = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"
_DURATION = re.compile(r"^P(?:(?P<y>\d+)Y)?(?:(?P<m>\d+)M)?(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?$")
_BUCKET = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"

Identifier = Annotated[str, Field(pattern=_IDENT)]


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


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class LegalBasis(_Strict):
    gdpr: str = Field(min_length=6, pattern=r"^Art\. ?\d")
    """The GDPR article, e.g. ``Art. 6(1)(c)``."""
    national: str | None = None
    """The national law where one applies, e.g. ``Bogføringsloven § 10``."""


class Retention(_Strict):
    period: str
    """ISO-8601 date duration (``P5Y``)."""
    counts_from: Literal["event", "end_of_financial_year"]
    event: str = Field(min_length=3)
    """Human description of the event the period counts from."""
    anchor: Identifier
    """The column of the records table holding the event's date or timestamp."""
    financial_year_start: str = Field(default="01-01", pattern=r"^(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$")

    @field_validator("period")
    @classmethod
    def _period(cls, v: str) -> str:
        Period.parse(v)
        return v

    @property
    def parsed_period(self) -> Period:
        return Period.parse(self.period)

    @property
    def fy_start(self) -> tuple[int, int]:
        month, day = self.financial_year_start.split("-")
        return int(month), int(day)


class Records(_Strict):
    """The table whose rows are the category's records, and how they link to a customer."""

    table: Identifier
    key: Identifier
    """An ordered unique key (the primary key) used for batching by key ranges."""
    subject: Identifier
    """The column holding the customer (subject) id."""


class ErasureRequest(_Strict):
    """What a customer's erasure request (GDPR Art. 17) does to this category."""

    action: Literal["erase", "keep_until_due"]
    law: str | None = None
    """Why records are kept (required for ``keep_until_due``), e.g. the Bookkeeping Act."""

    @model_validator(mode="after")
    def _law_for_keep(self) -> ErasureRequest:
        if self.action == "keep_until_due" and not self.law:
            raise ValueError("keep_until_due needs 'law': the law that requires keeping the records")
        return self


class Cap(_Strict):
    """Blast-radius cap: a plan above either limit waits for a human."""

    max_items: int = Field(gt=0)
    max_fraction: float = Field(gt=0, le=1)


class FieldRule(_Strict):
    strategy: Literal["null", "fixed", "redact", "pseudonym"]
    value: str | None = None
    """The replacement, for ``fixed`` only."""

    @model_validator(mode="after")
    def _value(self) -> FieldRule:
        if (self.strategy == "fixed") != (self.value is not None):
            raise ValueError("'value' is required for strategy fixed and not allowed otherwise")
        return self


class DatabaseLocation(_Strict):
    store: Literal["database"]
    table: Identifier
    foreign_key: Identifier | None = None
    """For a child table: its column referencing the records table's key."""
    action: Literal["delete", "anonymise"]
    fields: dict[Identifier, FieldRule] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _fields(self) -> DatabaseLocation:
        if self.action == "anonymise" and not self.fields:
            raise ValueError("anonymise needs 'fields': which columns to anonymise and how")
        if self.action == "delete" and self.fields:
            raise ValueError("'fields' only goes with action anonymise")
        return self


class S3Location(_Strict):
    store: Literal["s3"]
    bucket: str = Field(pattern=_BUCKET)
    key: str
    """Key template filled from the record's columns; a trailing ``/`` means everything under it."""

    @field_validator("key")
    @classmethod
    def _key(cls, v: str) -> str:
        return _check_template(v)


class SftpLocation(_Strict):
    store: Literal["sftp"]
    path: str
    """Path template relative to the archive root; a trailing ``/`` means the whole directory."""

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        return _check_template(v)


Location = Annotated[DatabaseLocation | S3Location | SftpLocation, Field(discriminator="store")]


def _check_template(template: str) -> str:
    names = placeholders(template)
    if not names:
        raise ValueError("the template must use at least one {column} placeholder")
    try:
        check_relative(template.replace("{", "x").replace("}", "x"), "template")
    except UnsafeTargetError as e:
        raise ValueError(str(e)) from None
    return template


class Policy(_Strict):
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

    @model_validator(mode="after")
    def _consistent(self) -> Policy:
        db = [loc for loc in self.locations if isinstance(loc, DatabaseLocation)]
        if not any(loc.table == self.records.table and loc.foreign_key is None for loc in db):
            raise ValueError(
                f"locations must include the records table {self.records.table!r} itself (store: database)"
            )
        seen: set[str] = set()
        for loc in db:
            if loc.table in seen:
                raise ValueError(f"table {loc.table!r} appears in two database locations")
            seen.add(loc.table)
            if loc.table == self.records.table and loc.foreign_key is not None:
                raise ValueError("the records table takes no foreign_key")
            if loc.table != self.records.table and loc.foreign_key is None:
                raise ValueError(f"child table {loc.table!r} needs 'foreign_key'")
        if self.id in self.after:
            raise ValueError("a category cannot run after itself")
        return self

    def template_columns(self) -> set[str]:
        cols: set[str] = set()
        for loc in self.locations:
            if isinstance(loc, S3Location):
                cols.update(placeholders(loc.key))
            elif isinstance(loc, SftpLocation):
                cols.update(placeholders(loc.path))
        return cols

    def stores(self) -> list[str]:
        """The stores this category touches, file stores first (the database row is their index)."""
        order = ("s3", "sftp", "database")
        present = {loc.store for loc in self.locations}
        return [s for s in order if s in present]


@dataclass(frozen=True)
class PolicySet:
    """A validated set of policies, in the order their erasure must run."""

    policies: tuple[Policy, ...]
    sources: Mapping[str, str]
    """Policy id -> file name, for messages."""

    @property
    def hash(self) -> str:
        """SHA-256 of the canonical JSON of every policy: the ledger records which rules applied."""
        payload = json.dumps([p.model_dump(mode="json") for p in self.policies], sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()

    def get(self, category: str) -> Policy:
        for p in self.policies:
            if p.id == category:
                return p
        raise PolicyError("<policy set>", "id", f"no category {category!r}")

    @property
    def ids(self) -> list[str]:
        return [p.id for p in self.policies]


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
        elif item in ("database", "s3", "sftp") and parts and parts[-1].startswith("["):
            continue  # pydantic's discriminator tag, not a field of the file
        else:
            parts.append(("." if parts else "") + str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return "".join(parts) or "<document>"


def parse_policy(text: str, file: str) -> Policy:
    """Parse and validate one policy document; raise ``PolicyError`` naming ``file`` and the field."""
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "<yaml>"
        raise PolicyError(file, where, f"not valid YAML: {getattr(e, 'problem', None) or e}") from None
    if not isinstance(data, dict):
        raise PolicyError(file, "<document>", "expected a mapping of policy fields")
    try:
        policy = Policy.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        field = _loc_to_field(err["loc"], data)
        msg = err["msg"].removeprefix("Value error, ")
        more = f" (and {len(e.errors()) - 1} more problem(s))" if len(e.errors()) > 1 else ""
        raise PolicyError(file, field, msg + more) from None
    stem = Path(file).stem
    if policy.id != stem:
        raise PolicyError(file, "id", f"must equal the file name {stem!r}, found {policy.id!r}")
    return policy


def load_policies(folder: str | Path) -> PolicySet:
    """Load every ``*.yaml`` in ``folder`` into a ``PolicySet`` ordered by ``after``; raise on a problem."""
    root = Path(folder)
    files = sorted(root.glob("*.yaml")) + sorted(root.glob("*.yml"))
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
    return PolicySet(tuple(_order(policies, sources)), sources)


def _order(policies: Iterable[Policy], sources: Mapping[str, str]) -> list[Policy]:
    by_id = {p.id: p for p in policies}
    for p in by_id.values():
        for dep in p.after:
            if dep not in by_id:
                raise PolicyError(sources[p.id], "after", f"unknown category {dep!r}")
    ordered: list[Policy] = []
    state: dict[str, int] = {}

    def visit(pid: str, chain: tuple[str, ...]) -> None:
        if state.get(pid) == 2:
            return
        if state.get(pid) == 1:
            raise PolicyError(sources[pid], "after", "circular order: " + " -> ".join((*chain, pid)))
        state[pid] = 1
        for dep in by_id[pid].after:
            visit(dep, (*chain, pid))
        state[pid] = 2
        ordered.append(by_id[pid])

    for pid in sorted(by_id):
        visit(pid, ())
    return ordered


@dataclass(frozen=True)
class ColumnInfo:
    """What the policy check needs to know about one column of the live schema."""

    type: Any
    """The SQLAlchemy type."""
    nullable: bool = True


def check_against_schema(policy_set: PolicySet, columns_of: Mapping[str, Mapping[str, ColumnInfo]]) -> None:
    """Refuse any table or column a policy names that the real schema does not have.

    ``columns_of`` maps table name -> {column name: ColumnInfo}, as reflected from the
    running database (see ``retention.adapters.database.reflect_columns``). Also refuses
    the ``null`` strategy on a NOT NULL column, which the database would reject mid-run.
    """
    for policy in policy_set.policies:
        file = policy_set.sources[policy.id]
        rec = policy.records
        _need_table(columns_of, rec.table, file, "records.table")
        cols = columns_of[rec.table]
        for field, col in (
            ("records.key", rec.key),
            ("records.subject", rec.subject),
            ("retention.anchor", policy.retention.anchor),
        ):
            _need_column(cols, rec.table, col, file, field)
        if not _is_temporal(cols[policy.retention.anchor].type):
            raise PolicyError(
                file,
                "retention.anchor",
                f"column {rec.table}.{policy.retention.anchor} is not a date or timestamp",
            )
        for i, loc in enumerate(policy.locations):
            where = f"locations[{i}]"
            if isinstance(loc, DatabaseLocation):
                _need_table(columns_of, loc.table, file, f"{where}.table")
                if loc.foreign_key:
                    _need_column(
                        columns_of[loc.table], loc.table, loc.foreign_key, file, f"{where}.foreign_key"
                    )
                for name, rule in loc.fields.items():
                    field = f"{where}.fields.{name}"
                    _need_column(columns_of[loc.table], loc.table, name, file, field)
                    if rule.strategy == "null" and not columns_of[loc.table][name].nullable:
                        raise PolicyError(
                            file, field, f"column {loc.table}.{name} is NOT NULL: use redact or fixed"
                        )
            else:
                template = loc.key if isinstance(loc, S3Location) else loc.path
                for name in placeholders(template):
                    _need_column(
                        cols, rec.table, name, file, f"{where}.{'key' if loc.store == 's3' else 'path'}"
                    )


def _need_table(columns_of: Mapping[str, Any], table: str, file: str, field: str) -> None:
    if table not in columns_of:
        raise PolicyError(file, field, f"table {table!r} does not exist in the database")


def _need_column(cols: Mapping[str, Any], table: str, column: str, file: str, field: str) -> None:
    if column not in cols:
        raise PolicyError(file, field, f"column {column!r} does not exist in table {table!r}")


def _is_temporal(sqltype: Any) -> bool:
    try:
        return issubclass(sqltype.python_type, (dt.date, dt.datetime))
    except (NotImplementedError, AttributeError):
        return False
