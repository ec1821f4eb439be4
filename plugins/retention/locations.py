"""Where a category's data lives: one location model per store, as written in a policy file.

Each model is strict (unknown keys refused) and carries a ``store`` tag that selects it.
The registry (``retention.stores``) ties each model to its adapter module; a new store is a
model here, an adapter module, and one registration line there.
"""

from __future__ import annotations

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


class DatabaseLocation(Strict):
    """A table of the business database: the records table itself, or a child referencing it."""

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

    @property
    def template(self) -> None:
        return None

    def label(self) -> str:
        return f"table:{self.table}"


class S3Location(Strict):
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


class _TreeLocation(Strict):
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
