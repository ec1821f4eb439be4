"""Where a category's data lives: one location model per store, as written in a policy file.

Each model is strict (unknown keys refused) and carries a ``store`` tag that selects it.
The registry (``retention.stores``) ties each model to its adapter module; a new store is a
model here, an adapter module, and one registration line there.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from retention.errors import RetentionError
from retention.paths import check_relative, placeholders

IDENT = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"
_BUCKET = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"

Identifier = Annotated[str, Field(pattern=IDENT)]


class Strict(BaseModel):
    """Base of every policy model: unknown keys refused, values frozen, text stripped."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class FieldRule(Strict):
    """How one column of a row that must stay is anonymised."""

    strategy: Literal["null", "fixed", "redact", "pseudonym"]
    value: str | None = None
    """The replacement, for ``fixed`` only."""

    @model_validator(mode="after")
    def _value(self) -> FieldRule:
        if (self.strategy == "fixed") != (self.value is not None):
            raise ValueError("'value' is required for strategy fixed and not allowed otherwise")
        return self


_HOP = re.compile(
    r"^([A-Za-z_][A-Za-z0-9_]{0,62})\.([A-Za-z_][A-Za-z0-9_]{0,62}) *-> *"
    r"([A-Za-z_][A-Za-z0-9_]{0,62})\.([A-Za-z_][A-Za-z0-9_]{0,62})$"
)


@dataclass(frozen=True)
class Hop:
    """One step of a join path: from rows of ``source`` to the rows of ``target`` whose
    ``target_column`` equals their ``source_column``. Written ``source.column -> target.column``
    in the direction the path walks (from the records towards the location); the foreign-key
    constraint that makes it a real link may point either way (checked against the schema)."""

    source: str
    source_column: str
    target: str
    target_column: str

    @classmethod
    def parse(cls, text: str) -> Hop:
        m = _HOP.match(text.strip()) if isinstance(text, str) else None
        if m is None:
            raise ValueError(f"a hop is written 'table.column -> table.column', found {text!r}")
        return cls(*m.groups())

    def __str__(self) -> str:
        return f"{self.source}.{self.source_column} -> {self.target}.{self.target_column}"


def parse_path(hops: Sequence[str], start: str, end: str) -> tuple[Hop, ...]:
    """The hops of a path from table ``start`` to table ``end``; ValueError naming what is wrong."""
    parsed = tuple(Hop.parse(h) for h in hops)
    if not parsed:
        raise ValueError("a path needs at least one hop")
    at = start
    seen = {start}
    for i, hop in enumerate(parsed):
        if hop.source != at:
            raise ValueError(f"hop [{i}] starts at table {hop.source!r}, but the path is at {at!r}")
        if hop.target in seen:
            raise ValueError(f"hop [{i}] returns to table {hop.target!r}: a path visits each table once")
        seen.add(hop.target)
        at = hop.target
    if at != end:
        raise ValueError(f"the path ends at table {at!r}, not at {end!r}")
    return parsed


class _Reaching(Strict):
    """A location whose rows (or, for files, whose naming rows) may be reached through a path."""

    via: list[str] | None = None
    """The join path from the records table to the location's table: hops
    ``table.column -> table.column``, each a real foreign key (either direction); tables in
    between are only read."""

    @field_validator("via")
    @classmethod
    def _via(cls, v: list[str] | None) -> list[str] | None:
        for i, hop in enumerate(v or ()):
            try:
                Hop.parse(hop)
            except ValueError as e:
                raise ValueError(f"via[{i}]: {e}") from None
        return v


class DatabaseLocation(_Reaching):
    """A table of the business database: the records table itself, a child referencing it
    (``foreign_key``), or a table reached from the records through a path of references (``via``)."""

    store: Literal["database"]
    table: Identifier
    foreign_key: Identifier | None = None
    """For a child table: its column referencing the records table's key (a one-hop ``via``)."""
    shared: Literal["keep", "erase", "anonymise"] = "keep"
    """Rows also reached from records that are not erased now (another customer's, or not due):
    ``keep`` them (default), ``erase`` them too (action anonymise only), or ``anonymise`` them
    (with ``fields``) while the others get the action."""
    action: Literal["delete", "anonymise"]
    fields: dict[Identifier, FieldRule] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _fields(self) -> DatabaseLocation:
        if self.action == "anonymise" and not self.fields:
            raise ValueError("anonymise needs 'fields': which columns to anonymise and how")
        if self.action == "delete" and self.fields and self.shared != "anonymise":
            raise ValueError("'fields' only goes with action anonymise (or shared: anonymise)")
        if self.action == "delete" and self.shared == "anonymise" and not self.fields:
            raise ValueError("shared: anonymise needs 'fields': which columns to anonymise and how")
        if self.action == "delete" and self.shared == "erase":
            raise ValueError(
                "shared: erase cannot go with action delete: a row other records still reference "
                "cannot be deleted; use shared: anonymise (with fields) or keep"
            )
        if self.via is not None and self.foreign_key is not None:
            raise ValueError("give either 'foreign_key' (a child table) or 'via' (a path), not both")
        return self

    def hops(self, records_table: str, records_key: str) -> tuple[Hop, ...]:
        """The path from the records table: ``via``, or the one hop ``foreign_key`` stands for."""
        if self.via is not None:
            return parse_path(self.via, records_table, self.table)
        if self.foreign_key is not None:
            return (Hop(records_table, records_key, self.table, self.foreign_key),)
        return ()

    @property
    def template(self) -> None:
        return None

    def label(self) -> str:
        return f"table:{self.table}"


_ISO_DAYS = r"^P[1-9][0-9]{0,3}D$"


class Orphans(Strict):
    """What the orphan sweep (``retention_sweep``) does with items under a location's root (the
    template's fixed part: ``documents/`` of ``documents/{customer_id}/{id}.pdf``) that no record
    of any category names, exactly or by prefix."""

    action: Literal["report", "erase"] = "report"
    """``report`` (count and alert) or ``erase`` (through the same rules as everything else)."""
    law: str | None = None
    """Why unnamed items may be erased (required for ``erase``), e.g. storage limitation."""
    grace: str = Field(default="P7D", pattern=_ISO_DAYS)
    """Items younger than this (``P<n>D``) are never orphans: an upload may be in progress."""

    @model_validator(mode="after")
    def _law_for_erase(self) -> Orphans:
        if self.action == "erase" and not self.law:
            raise ValueError("erase needs 'law': the legal basis for erasing items no record names")
        return self


class _Named(_Reaching):
    """Items named by a template filled from the records' columns, or, with ``via``, from the
    columns of the rows the records reach through the path (an order's document, say)."""

    orphans: Orphans = Field(default_factory=Orphans)
    """What the orphan sweep does with items under this location's root that no record names."""

    def hops(self, records_table: str) -> tuple[Hop, ...]:
        """The path from the records table to the rows whose columns fill the template (none: the records)."""
        if not self.via:
            return ()
        return parse_path(self.via, records_table, self.naming_table(records_table))

    def naming_table(self, records_table: str) -> str:
        """The table whose columns fill the template: the path's last table, or the records table."""
        return Hop.parse(self.via[-1]).target if self.via else records_table


class S3Location(_Named):
    """Objects in a bucket, every version: a key template filled from each record."""

    store: Literal["s3"]
    bucket: str = Field(pattern=_BUCKET)
    key: str
    """Key template filled from the record's columns; a trailing ``/`` means everything under it."""

    @field_validator("key")
    @classmethod
    def _key(cls, v: str) -> str:
        return check_template(v)

    @property
    def template(self) -> str:
        return self.key

    def label(self) -> str:
        return f"s3:{self.bucket}/{self.key}"


class _TreeLocation(_Named):
    """Files under a root directory, named by a path template filled from each record."""

    path: str
    """Path template relative to the root; a trailing ``/`` means the whole directory."""

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        return check_template(v)

    @property
    def template(self) -> str:
        return self.path


class SftpLocation(_TreeLocation):
    """Files in the SFTP translation archive, under its root (setting ``archive_root``)."""

    store: Literal["sftp"]

    def label(self) -> str:
        return f"sftp:{self.path}"


class FilesystemLocation(_TreeLocation):
    """Files on a mounted share (a directory of this machine), under its root (``filesystem_root``)."""

    store: Literal["filesystem"]

    def label(self) -> str:
        return f"filesystem:{self.path}"


AnyLocation = DatabaseLocation | S3Location | SftpLocation | FilesystemLocation
FileLocation = S3Location | SftpLocation | FilesystemLocation
"""The locations whose items a record names through a template (the record is their index)."""

Location = Annotated[AnyLocation, Field(discriminator="store")]


def check_template(template: str) -> str:
    """``template`` if it uses only plain ``{column}`` placeholders and renders a relative path.

    Raises ValueError (what pydantic validators must raise) naming the problem.
    """
    try:
        names = placeholders(template)
        if not names:
            raise ValueError("the template must use at least one {column} placeholder")
        check_relative(template.replace("{", "x").replace("}", "x"), "template")
    except RetentionError as e:
        raise ValueError(str(e)) from None
    return template
