"""Policy loading: the shipped set is valid, and malformed policies are refused naming file and field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from retention.errors import PolicyError
from retention.policy import Period, Policy, PolicySet, check_against_schema, load_policies, parse_policy
from retention.schema import ColumnInfo, ForeignKeyInfo, SchemaInfo, TableInfo

POLICY_DIR = Path(__file__).resolve().parents[2] / "include" / "retention_policies"

BASE: dict[str, Any] = yaml.safe_load((POLICY_DIR / "translation_documents.yaml").read_text())
FILE = "translation_documents.yaml"


def mutate(path: str, value: Any) -> dict[str, Any]:
    """A copy of BASE with one field set (value ...) or removed (value DELETE)."""
    doc = copy.deepcopy(BASE)
    node: Any = doc
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    last = parts[-1]
    if value is DELETE:
        del node[int(last) if isinstance(node, list) else last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return doc


DELETE = object()

# (mutation path, new value or DELETE, field the error must name, a word the message must contain)
MALFORMED: list[tuple[str, Any, str, str]] = [
    ("id", 42, "id", "string"),
    ("id", "other_name", "id", "file name"),
    ("id", "bad id!", "id", "pattern"),
    ("description", DELETE, "description", "required"),
    ("description", "short", "description", "at least"),
    ("surprise", "x", "surprise", "not permitted"),
    ("legal_basis.gdpr", "six one b", "legal_basis.gdpr", "pattern"),
    ("legal_basis.article", "Art. 6", "legal_basis.article", "not permitted"),
    ("legal_basis.basis", DELETE, "legal_basis.basis", "required"),
    ("legal_basis.basis", "marketing", "legal_basis.basis", "legitimate_interests"),
    ("purpose", {"da": "Til oversættelsen"}, "purpose.en", "required"),
    ("erasure_request.objection", {"action": "keep_until_due"}, "erasure_request.objection", "law"),
    ("direct_marketing", "maybe", "direct_marketing", "boolean"),
    ("locations.0.orphans", {"action": "erase"}, "locations[0].orphans", "law"),
    ("locations.0.orphans", {"grace": "1 week"}, "locations[0].orphans.grace", "pattern"),
    ("locations.0.orphans", {"action": "shred"}, "locations[0].orphans.action", "report"),
    ("retention.period", "5 years", "retention.period", "ISO-8601"),
    ("retention.period", "-P5Y", "retention.period", "ISO-8601"),
    ("retention.period", "P0D", "retention.period", "longer than zero"),
    ("retention.period", "PT5H", "retention.period", "ISO-8601"),
    ("retention.period", "P500Y", "retention.period", "at most 100"),
    ("retention.period", 5, "retention.period", "string"),
    ("retention.counts_from", "creation", "retention.counts_from", "event"),
    ("retention.anchor", "delivered at", "retention.anchor", "pattern"),
    ("retention.anchor", DELETE, "retention.anchor", "required"),
    ("retention.financial_year_start", "13-01", "retention.financial_year_start", "pattern"),
    ("records.key", DELETE, "records.key", "required"),
    ("records.table", "documents; DROP TABLE x", "records.table", "pattern"),
    ("erasure_request.action", "forget", "erasure_request.action", "erase"),
    ("erasure_request", {"action": "keep_until_due"}, "erasure_request", "law"),
    ("cap.max_items", -1, "cap.max_items", "greater than 0"),
    ("cap.max_fraction", 1.5, "cap.max_fraction", "less than or equal"),
    ("cap.max_fraction", "lots", "cap.max_fraction", "number"),
    ("after", ["translation_documents"], "<document>", "after itself"),
    ("locations", [], "locations", "at least 1"),
    ("locations.0.store", "ftp", "locations[0]", "store"),
    ("locations.0.bucket", "Not_A_Bucket", "locations[0].bucket", "pattern"),
    ("locations.0.key", "../{s3_key}", "locations[0].key", "'..'"),
    ("locations.0.key", "/abs/{s3_key}", "locations[0].key", "absolute"),
    ("locations.0.key", "documents/static.txt", "locations[0].key", "placeholder"),
    ("locations.0.key", "{s3_key!r}", "locations[0].key", "conversion"),
    ("locations.0.key", "{s3_key.__class__}", "locations[0].key", "plain name"),
    ("locations.1.path", "a//{archive_path}", "locations[1].path", "empty"),
    ("locations.1.path", "{archive_path}\\x", "locations[1].path", "backslash"),
    ("locations.2.action", "shred", "locations[2].action", "delete"),
    ("locations.2.fields", {"name": {"strategy": "null"}}, "locations[2]", "anonymise"),
    ("locations.2.table", "translation_jobs", "<document>", "records table"),
]


@pytest.mark.parametrize(
    ("path", "value", "field", "word"), MALFORMED, ids=[f"{m[0]}={m[1]!r}" for m in MALFORMED]
)
def test_malformed_policy_is_refused_naming_file_and_field(
    path: str, value: Any, field: str, word: str
) -> None:
    text = yaml.safe_dump(mutate(path, value), allow_unicode=True)
    with pytest.raises(PolicyError) as err:
        parse_policy(text, FILE)
    assert err.value.file == FILE
    assert err.value.field == field, str(err.value)
    assert word.lower() in err.value.message.lower(), str(err.value)
    assert str(err.value).startswith(f"{FILE}: {field}: ")


def test_anonymise_without_fields_and_unknown_strategy_are_refused() -> None:
    doc = mutate("locations.2", {"store": "database", "table": "documents", "action": "anonymise"})
    with pytest.raises(PolicyError, match=r"locations\[2\]: anonymise needs 'fields'"):
        parse_policy(yaml.safe_dump(doc), FILE)
    doc = mutate(
        "locations.2",
        {
            "store": "database",
            "table": "documents",
            "action": "anonymise",
            "fields": {"filename": {"strategy": "shuffle"}},
        },
    )
    with pytest.raises(PolicyError, match=r"locations\[2\]\.fields\.filename\.strategy"):
        parse_policy(yaml.safe_dump(doc), FILE)
    doc = mutate(
        "locations.2",
        {
            "store": "database",
            "table": "documents",
            "action": "anonymise",
            "fields": {"filename": {"strategy": "fixed"}},
        },
    )
    with pytest.raises(PolicyError, match=r"locations\[2\]\.fields\.filename: 'value' is required"):
        parse_policy(yaml.safe_dump(doc), FILE)


def test_duplicate_yaml_key_is_refused_with_its_line() -> None:
    text = (POLICY_DIR / FILE).read_text() + "\nid: translation_documents\n"
    with pytest.raises(PolicyError, match=r"translation_documents\.yaml: line \d+: .*duplicate key 'id'"):
        parse_policy(text, FILE)


def test_not_yaml_and_not_a_mapping_are_refused() -> None:
    with pytest.raises(PolicyError, match="not valid YAML"):
        parse_policy("id: [unclosed", FILE)
    with pytest.raises(PolicyError, match="<document>: expected a mapping"):
        parse_policy("- a\n- b\n", FILE)


def test_duplicate_ids_unknown_and_circular_order_in_a_folder(tmp_path: Path) -> None:
    for f in POLICY_DIR.glob("*.yaml"):
        (tmp_path / f.name).write_text(f.read_text())
    (tmp_path / "translation_documents.yml").write_text((POLICY_DIR / FILE).read_text())
    with pytest.raises(PolicyError, match=r"translation_documents\.yml: id: duplicate id"):
        load_policies(tmp_path)
    (tmp_path / "translation_documents.yml").unlink()
    doc = yaml.safe_load((tmp_path / FILE).read_text())
    doc["after"] = ["translation_jobs"]
    (tmp_path / FILE).write_text(yaml.safe_dump(doc))
    with pytest.raises(PolicyError, match="after: circular order"):
        load_policies(tmp_path)
    doc["after"] = ["no_such_category"]
    (tmp_path / FILE).write_text(yaml.safe_dump(doc))
    with pytest.raises(PolicyError, match="after: unknown category 'no_such_category'"):
        load_policies(tmp_path)


def test_empty_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="no policy files"):
        load_policies(tmp_path)


def test_shipped_policy_set_is_valid_and_ordered() -> None:
    ps = load_policies(POLICY_DIR)
    assert len(ps.ids) == 12
    for policy in ps.policies:
        for dep in policy.after:
            assert ps.ids.index(dep) < ps.ids.index(policy.id)
    invoices = ps.get("invoices")
    assert invoices.erasure_request.action == "keep_until_due"
    assert "Bogføringsloven" in (invoices.legal_basis.national or "")
    assert ps.hash == load_policies(POLICY_DIR).hash


def _info(columns_of: dict[str, dict[str, ColumnInfo]]) -> SchemaInfo:
    """A schema of the given columns, each table keyed by its ``id`` (the primary key)."""
    return SchemaInfo(
        {t: TableInfo(cols, primary_key=("id",) if "id" in cols else ()) for t, cols in columns_of.items()}
    )


def _schema(**overrides: dict[str, Any]) -> dict[str, dict[str, Any]]:
    import sqlalchemy as sa

    types = {
        "id": sa.BigInteger(),
        "customer_id": sa.BigInteger(),
        "delivered_at": sa.DateTime(timezone=True),
        "s3_key": sa.Text(),
        "archive_path": sa.Text(),
    }
    base: dict[str, dict[str, Any]] = {"documents": {k: ColumnInfo(v) for k, v in types.items()}}
    base.update(overrides)
    return base


def test_schema_check_refuses_missing_table_and_columns() -> None:
    import sqlalchemy as sa

    ps = load_policies(POLICY_DIR)
    only_docs = type(ps)((ps.get("translation_documents"),), {"translation_documents": FILE})
    check_against_schema(only_docs, _info(_schema()))
    with pytest.raises(PolicyError, match="records.table: table 'documents' does not exist"):
        check_against_schema(only_docs, SchemaInfo({}))
    cols = _schema()["documents"]
    for missing, field in (
        ("customer_id", "records.subject"),
        ("delivered_at", "retention.anchor"),
        ("s3_key", r"locations\[0\]\.key"),
        ("archive_path", r"locations\[1\]\.path"),
    ):
        broken = {k: v for k, v in cols.items() if k != missing}
        with pytest.raises(PolicyError, match=rf"{FILE}: {field}: column '{missing}' does not exist"):
            check_against_schema(only_docs, _info({"documents": broken}))
    with pytest.raises(PolicyError, match="is not a date or timestamp"):
        check_against_schema(only_docs, _info({"documents": {**cols, "delivered_at": ColumnInfo(sa.Text())}}))


def test_a_timestamp_without_time_zone_needs_the_zone_it_is_written_in() -> None:
    import dataclasses

    import sqlalchemy as sa
    from sqlalchemy.dialects import sqlite

    ps = load_policies(POLICY_DIR)
    docs = ps.get("translation_documents")
    cols = _schema()["documents"]
    naive = {"documents": {**cols, "delivered_at": ColumnInfo(sa.DateTime(timezone=False))}}
    only_docs = type(ps)((docs,), {"translation_documents": FILE})
    with pytest.raises(PolicyError, match=rf"{FILE}: retention.anchor: .*timestamp without time zone"):
        check_against_schema(only_docs, _info(naive))

    zoned = docs.model_copy(
        update={"retention": docs.retention.model_copy(update={"anchor_time_zone": "Europe/Copenhagen"})}
    )
    check_against_schema(dataclasses.replace(only_docs, policies=(zoned,)), _info(naive))
    # SQLite has no timestamp type: its text timestamps are UTC as written through SQLAlchemy.
    on_sqlite = {"documents": {**cols, "delivered_at": ColumnInfo(sqlite.DATETIME())}}
    check_against_schema(only_docs, _info(on_sqlite))


def test_an_unknown_anchor_time_zone_is_refused_naming_the_field() -> None:
    doc = yaml.safe_load((POLICY_DIR / FILE).read_text())
    doc["retention"]["anchor_time_zone"] = "Europe/Kobenhavn"
    with pytest.raises(PolicyError) as refused:
        parse_policy(yaml.safe_dump(doc), FILE)
    assert (refused.value.file, refused.value.field) == (FILE, "retention.anchor_time_zone")
    assert "not a time zone name" in refused.value.message


def test_schema_check_refuses_null_strategy_on_not_null_column() -> None:
    import sqlalchemy as sa

    ps = load_policies(POLICY_DIR)
    customers = type(ps)(
        (ps.get("customer_master_data"),), {"customer_master_data": "customer_master_data.yaml"}
    )
    cols = {c: ColumnInfo(sa.Text()) for c in ("name", "email", "phone", "address")}
    cols |= {"id": ColumnInfo(sa.BigInteger()), "last_activity_at": ColumnInfo(sa.DateTime(timezone=True))}
    check_against_schema(customers, _info({"customers": cols}))
    cols["email"] = ColumnInfo(sa.Text(), nullable=False)
    with pytest.raises(
        PolicyError, match=r"locations\[0\]\.fields\.email: column customers.email is NOT NULL"
    ):
        check_against_schema(customers, _info({"customers": cols}))


# -- relations: records keys, foreign keys of child tables, cascades -------------------------------

ORDERS = "orders.yaml"


def _table_policy(pid: str, table: str, *children: tuple[str, str], key: str = "id") -> Policy:
    """A policy deleting the rows of ``table`` (records keyed by ``key``) and of each ``(child, fk)``."""
    doc = copy.deepcopy(BASE)
    doc["id"] = pid
    doc["records"] = {"table": table, "key": key, "subject": "customer_id"}
    doc["retention"]["anchor"] = "created_at"
    doc["locations"] = [{"store": "database", "table": table, "action": "delete"}] + [
        {"store": "database", "table": child, "foreign_key": fk, "action": "delete"} for child, fk in children
    ]
    return parse_policy(yaml.safe_dump(doc), f"{pid}.yaml")


def _set(*policies: Policy) -> PolicySet:
    return PolicySet(tuple(policies), {p.id: f"{p.id}.yaml" for p in policies})


def _table(
    *columns: str,
    pk: tuple[str, ...] = ("id",),
    unique: frozenset[str] = frozenset(),
    not_null: frozenset[str] = frozenset(),
    fks: tuple[ForeignKeyInfo, ...] = (),
) -> TableInfo:
    import sqlalchemy as sa

    cols = {c: ColumnInfo(sa.BigInteger(), nullable=c not in not_null and c not in pk) for c in columns}
    cols["created_at"] = ColumnInfo(sa.DateTime(timezone=True))
    return TableInfo(cols, primary_key=pk, unique=unique, foreign_keys=fks)


def _fk(column: str, parent: str, key: str = "id", ondelete: str = "NO ACTION") -> ForeignKeyInfo:
    return ForeignKeyInfo((column,), parent, (key,), ondelete)


def _shop(**tables: TableInfo) -> SchemaInfo:
    """orders (key id, subject customer_id) and order_lines (order_id -> orders.id), plus ``tables``."""
    base = {
        "customers": _table("id"),
        "orders": _table("id", "customer_id", "ref", fks=(_fk("customer_id", "customers"),)),
        "order_lines": _table("id", "order_id", "customer_id", fks=(_fk("order_id", "orders"),)),
    }
    return SchemaInfo(base | tables)


def test_relations_accepts_a_real_foreign_key_and_a_primary_key() -> None:
    check_against_schema(_set(_table_policy("orders", "orders", ("order_lines", "order_id"))), _shop())


def test_relations_refuses_a_child_without_the_foreign_key_constraint() -> None:
    ps = _set(_table_policy("orders", "orders", ("order_lines", "order_id")))
    schema = _shop(order_lines=_table("id", "order_id", "customer_id"))
    with pytest.raises(PolicyError) as e:
        check_against_schema(ps, schema)
    assert (e.value.file, e.value.field) == (ORDERS, "locations[1].foreign_key")
    assert e.value.message == "no foreign key constraint order_lines.order_id -> orders.id in the database"


@pytest.mark.parametrize(
    ("fk", "has"),
    [
        (_fk("order_id", "customers"), "order_lines.order_id -> customers.id"),
        (_fk("order_id", "orders", key="ref"), "order_lines.order_id -> orders.ref"),
        (
            ForeignKeyInfo(("order_id", "customer_id"), "orders", ("id", "customer_id")),
            "order_lines.order_id, customer_id -> orders.id, customer_id",
        ),
    ],
)
def test_relations_refuses_a_foreign_key_to_another_table_or_column(fk: ForeignKeyInfo, has: str) -> None:
    ps = _set(_table_policy("orders", "orders", ("order_lines", "order_id")))
    schema = _shop(order_lines=_table("id", "order_id", "customer_id", fks=(fk,)))
    with pytest.raises(PolicyError) as e:
        check_against_schema(ps, schema)
    assert e.value.field == "locations[1].foreign_key"
    assert "no foreign key constraint order_lines.order_id -> orders.id in the database" in e.value.message
    assert e.value.message.endswith(f"it has {has}")


@pytest.mark.parametrize(
    ("orders", "missing"),
    [
        (_table("id", "customer_id", "ref"), "neither the primary key nor has a single-column UNIQUE"),
        (_table("id", "customer_id", "ref", unique=frozenset({"ref"})), "unique but nullable: it needs NOT"),
        (_table("id", "customer_id", "ref", pk=("ref", "id")), "part of the composite primary key (ref, id)"),
    ],
)
def test_relations_refuses_a_records_key_not_unique_and_not_null(orders: TableInfo, missing: str) -> None:
    ps = _set(_table_policy("orders", "orders", key="ref"))
    with pytest.raises(PolicyError) as e:
        check_against_schema(ps, _shop(orders=orders))
    assert (e.value.file, e.value.field) == (ORDERS, "records.key")
    assert e.value.message.startswith("column orders.ref is not a unique, not-null key: ")
    assert missing in e.value.message


def test_relations_accepts_a_unique_not_null_key() -> None:
    orders = _table("id", "customer_id", "ref", unique=frozenset({"ref"}), not_null=frozenset({"ref"}))
    check_against_schema(_set(_table_policy("orders", "orders", key="ref")), _shop(orders=orders))


def test_relations_refuses_a_cascade_into_an_unnamed_table() -> None:
    lines = _table("id", "order_id", "customer_id", fks=(_fk("order_id", "orders", ondelete="CASCADE"),))
    with pytest.raises(PolicyError) as e:
        check_against_schema(_set(_table_policy("orders", "orders")), _shop(order_lines=lines))
    assert (e.value.file, e.value.field) == (ORDERS, "locations[0].action")
    assert e.value.message.startswith(
        "deleting from orders cascades to orders -> order_lines, which no policy names"
    )
    assert "(ON DELETE CASCADE of order_lines.order_id -> orders.id)" in e.value.message


def test_relations_accepts_a_cascade_into_a_table_a_policy_names() -> None:
    lines = _table("id", "order_id", "customer_id", fks=(_fk("order_id", "orders", ondelete="CASCADE"),))
    schema = _shop(order_lines=lines)
    check_against_schema(_set(_table_policy("orders", "orders", ("order_lines", "order_id"))), schema)
    # ... also when another policy names it
    two = _set(_table_policy("orders", "orders"), _table_policy("lines", "order_lines"))
    check_against_schema(two, schema)


def test_relations_refuses_a_two_hop_cascade_naming_both_hops() -> None:
    lines = _table("id", "order_id", "customer_id", fks=(_fk("order_id", "orders", ondelete="CASCADE"),))
    notes = _table("id", "line_id", fks=(_fk("line_id", "order_lines", ondelete="CASCADE"),))
    ps = _set(_table_policy("orders", "orders", ("order_lines", "order_id")))
    with pytest.raises(PolicyError) as e:
        check_against_schema(ps, _shop(order_lines=lines, line_notes=notes))
    assert e.value.field == "locations[0].action"
    assert e.value.message.startswith(
        "deleting from orders cascades to orders -> order_lines -> line_notes, which no policy names"
    )


@pytest.mark.parametrize("rule", ["SET NULL", "SET DEFAULT"])
def test_relations_refuses_set_null_or_default_into_an_unnamed_table(rule: str) -> None:
    audit = _table("id", "order_id", fks=(_fk("order_id", "orders", ondelete=rule),))
    ps = _set(_table_policy("orders", "orders", ("order_lines", "order_id")))
    with pytest.raises(PolicyError) as e:
        check_against_schema(ps, _shop(audit=audit))
    assert e.value.field == "locations[0].action"
    assert e.value.message.startswith(
        "deleting from orders cascades to orders -> audit, which no policy names"
    )
    assert f"ON DELETE {rule} of audit.order_id -> orders.id" in e.value.message


def test_relations_refuses_a_cascade_from_a_child_table_delete() -> None:
    notes = _table("id", "line_id", fks=(_fk("line_id", "order_lines", ondelete="CASCADE"),))
    ps = _set(_table_policy("orders", "orders", ("order_lines", "order_id")))
    with pytest.raises(PolicyError) as e:
        check_against_schema(ps, _shop(line_notes=notes))
    assert e.value.field == "locations[1].action"
    assert "deleting from order_lines cascades to order_lines -> line_notes" in e.value.message


@pytest.mark.parametrize("rule", ["NO ACTION", "RESTRICT"])
def test_relations_accepts_restrict_and_no_action(rule: str) -> None:
    audit = _table("id", "order_id", fks=(_fk("order_id", "orders", ondelete=rule),))
    check_against_schema(_set(_table_policy("orders", "orders")), _shop(audit=audit))


def test_relations_anonymising_deletes_nothing_so_cascades_do_not_matter() -> None:
    doc = copy.deepcopy(BASE)
    doc |= {"id": "orders", "records": {"table": "orders", "key": "id", "subject": "customer_id"}}
    doc["retention"]["anchor"] = "created_at"
    fields = {"ref": {"strategy": "null"}}
    doc["locations"] = [{"store": "database", "table": "orders", "action": "anonymise", "fields": fields}]
    audit = _table("id", "order_id", fks=(_fk("order_id", "orders", ondelete="CASCADE"),))
    check_against_schema(_set(parse_policy(yaml.safe_dump(doc), ORDERS)), _shop(audit=audit))


def test_cascades_follow_a_cascade_past_a_table_first_reached_by_set_null() -> None:
    # orders -SET NULL-> audit; orders -CASCADE-> order_lines -CASCADE-> audit -CASCADE-> audit_notes
    schema = _shop(
        order_lines=_table("id", "order_id", fks=(_fk("order_id", "orders", ondelete="CASCADE"),)),
        audit=_table(
            "id",
            "order_id",
            "line_id",
            fks=(
                _fk("order_id", "orders", ondelete="SET NULL"),
                _fk("line_id", "order_lines", ondelete="CASCADE"),
            ),
        ),
        audit_notes=_table("id", "audit_id", fks=(_fk("audit_id", "audit", ondelete="CASCADE"),)),
        cycle=_table("id", "parent_id", fks=(_fk("parent_id", "cycle", ondelete="CASCADE"),)),
    )
    chains = {c.chain[-1]: c.describe() for c in schema.cascades("orders")}
    assert chains == {
        "audit": "orders -> audit",
        "order_lines": "orders -> order_lines",
        "audit_notes": "orders -> order_lines -> audit -> audit_notes",
    }
    assert [c.describe() for c in schema.cascades("cycle")] == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("P5Y", Period(5, 0, 0)),
        ("P18M", Period(0, 18, 0)),
        ("P1Y6M", Period(1, 6, 0)),
        ("P2W", Period(0, 0, 14)),
        ("P30D", Period(0, 0, 30)),
        ("P1Y2M3W4D", Period(1, 2, 25)),
    ],
)
def test_period_parse(text: str, expected: Period) -> None:
    assert Period.parse(text) == expected
