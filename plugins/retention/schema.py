"""What the policy check knows about the live database schema: columns, keys and relations.

``retention.adapters.database.reflect_schema`` fills these values from the running database
(PostgreSQL or SQLite); ``retention.policy.check_against_schema`` checks a policy set against
them. They are plain frozen values, so the check itself needs no database and tests can write a
schema by hand.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

NO_ACTION = "NO ACTION"
CASCADE = "CASCADE"
_KEEPS_ROWS = frozenset({NO_ACTION, "RESTRICT"})
"""ON DELETE rules that leave the referencing rows alone (the database refuses the delete instead)."""


def normalise_ondelete(rule: str | None) -> str:
    """The ON DELETE rule as one canonical word group: ``CASCADE``, ``SET NULL``, ``NO ACTION``, ...

    ``None`` (what reflection gives when no rule is declared) is ``NO ACTION``; a column list
    (PostgreSQL 15's ``SET NULL (col)``) is dropped.
    """
    if not rule:
        return NO_ACTION
    return " ".join(rule.split("(")[0].upper().split()) or NO_ACTION


@dataclass(frozen=True)
class ColumnInfo:
    """What the policy check needs to know about one column of the live schema."""

    type: Any
    """The SQLAlchemy type."""
    nullable: bool = True


@dataclass(frozen=True)
class ForeignKeyInfo:
    """One foreign-key constraint of a table: its columns reference ``referred_table``'s columns."""

    columns: tuple[str, ...]
    referred_table: str
    """The referenced table; one in another schema is named ``schema.table`` (no policy can name it)."""
    referred_columns: tuple[str, ...]
    ondelete: str = NO_ACTION
    """The canonical ON DELETE rule (see ``normalise_ondelete``)."""

    @property
    def changes_rows(self) -> bool:
        """Whether deleting a referenced row deletes or changes the referencing rows."""
        return self.ondelete not in _KEEPS_ROWS

    def describe(self, table: str) -> str:
        """``child.col -> parent.key``: the constraint as messages name it."""
        referred = ", ".join(self.referred_columns)
        return f"{table}.{', '.join(self.columns)} -> {self.referred_table}.{referred}"


@dataclass(frozen=True)
class TableInfo:
    """One table of the live schema: its columns, keys and foreign keys."""

    columns: Mapping[str, ColumnInfo]
    primary_key: tuple[str, ...] = ()
    unique: frozenset[str] = frozenset()
    """Columns that are unique on their own: a single-column UNIQUE constraint or unique index.

    Partial and expression indexes do not count. The primary key is not repeated here.
    """
    foreign_keys: tuple[ForeignKeyInfo, ...] = ()


@dataclass(frozen=True)
class Cascade:
    """A path along which deleting from ``chain[0]`` deletes or changes rows of ``chain[-1]``."""

    chain: tuple[str, ...]
    """The tables from the deleted one to the affected one."""
    via: ForeignKeyInfo
    """The last constraint of the path: ``chain[-1]``'s foreign key to ``chain[-2]``."""

    def describe(self) -> str:
        return " -> ".join(self.chain)


@dataclass(frozen=True)
class SchemaInfo:
    """The live schema as the policy check sees it: table name -> ``TableInfo``.

    It must hold every table of the schema, not only the ones the policies name: the cascade
    check follows the foreign keys of the tables that reference the policies' tables.
    """

    tables: Mapping[str, TableInfo] = field(default_factory=dict)
    dialect: str = ""
    """The database's dialect (``postgresql``, ``sqlite``), as reflected; empty if built by hand."""

    def __contains__(self, table: object) -> bool:
        return table in self.tables

    def columns(self, table: str) -> Mapping[str, ColumnInfo]:
        return self.tables[table].columns

    def key_problem(self, table: str, column: str) -> str | None:
        """What keeps ``table.column`` from being a unique, not-null key; None if it is one.

        A key is the single-column primary key, or a single-column UNIQUE constraint or unique
        index on a NOT NULL column.
        """
        info = self.tables[table]
        if info.primary_key == (column,):
            return None
        unique = column in info.unique
        if unique and not info.columns[column].nullable:
            return None
        if unique:
            return "it is unique but nullable: it needs NOT NULL"
        if column in info.primary_key:
            return f"it is only part of the composite primary key ({', '.join(info.primary_key)})"
        return "it is neither the primary key nor has a single-column UNIQUE constraint or unique index"

    def foreign_key(self, child: str, column: str, parent: str, key: str) -> ForeignKeyInfo | None:
        """The single-column foreign key ``child.column -> parent.key``, if the schema has one."""
        for fk in self.tables[child].foreign_keys:
            if fk.columns == (column,) and fk.referred_table == parent and fk.referred_columns == (key,):
                return fk
        return None

    def link(
        self, source: str, source_column: str, target: str, target_column: str
    ) -> tuple[Literal["child", "parent"], ForeignKeyInfo] | None:
        """The foreign key joining ``source.source_column`` to ``target.target_column`` and the way a
        path stepping from source to target goes: ``child`` when the target's column references the
        source's (to child rows), ``parent`` when the source's references the target's (to the one
        row referenced; paths from several rows may converge there). None without such a key."""
        down = self.foreign_key(target, target_column, source, source_column)
        if down is not None:
            return "child", down
        up = self.foreign_key(source, source_column, target, target_column)
        return None if up is None else ("parent", up)

    def references_from(self, child: str, column: str) -> list[ForeignKeyInfo]:
        """The foreign keys of ``child`` that include ``column`` (to say what it references instead)."""
        return [fk for fk in self.tables[child].foreign_keys if column in fk.columns]

    def referencing(self, table: str) -> Iterator[tuple[str, ForeignKeyInfo]]:
        """``(child table, foreign key)`` for every foreign key that references ``table``, in name order."""
        for child in sorted(self.tables):
            for fk in self.tables[child].foreign_keys:
                if fk.referred_table == table:
                    yield child, fk

    def cascades(self, table: str) -> Iterator[Cascade]:
        """Every table whose rows deleting from ``table`` deletes or changes, shortest path first.

        ``ON DELETE CASCADE`` is followed on (the deleted child rows cascade further);
        ``SET NULL`` / ``SET DEFAULT`` change the referencing rows and stop there;
        ``RESTRICT`` / ``NO ACTION`` make the database refuse the delete and change nothing.
        Each affected table is reported once, by its shortest path.
        """
        reported = {table}
        expanded = {table}
        frontier: list[tuple[str, ...]] = [(table,)]
        while frontier:
            following: list[tuple[str, ...]] = []
            for chain in frontier:
                for child, fk in self.referencing(chain[-1]):
                    if not fk.changes_rows:
                        continue
                    if child not in reported:
                        reported.add(child)
                        yield Cascade((*chain, child), fk)
                    # A table first reached by SET NULL may still be reached by a CASCADE that
                    # deletes its rows and so cascades on: it is expanded once, by the first.
                    if fk.ondelete == CASCADE and child not in expanded:
                        expanded.add(child)
                        following.append((*chain, child))
            frontier = following
