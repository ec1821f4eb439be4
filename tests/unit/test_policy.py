"""Policy loading: the shipped set is valid, and malformed policies are refused naming file and field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from retention.errors import PolicyError
from retention.policy import ColumnInfo, Period, check_against_schema, load_policies, parse_policy

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
    assert len(ps.ids) == 10
    for policy in ps.policies:
        for dep in policy.after:
            assert ps.ids.index(dep) < ps.ids.index(policy.id)
    invoices = ps.get("invoices")
    assert invoices.erasure_request.action == "keep_until_due"
    assert "Bogføringsloven" in (invoices.legal_basis.national or "")
    assert ps.hash == load_policies(POLICY_DIR).hash


def _schema(**overrides: dict[str, Any]) -> dict[str, dict[str, Any]]:
    import sqlalchemy as sa

    types = {
        "id": sa.BigInteger(),
        "customer_id": sa.BigInteger(),
        "delivered_at": sa.DateTime(),
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
    check_against_schema(only_docs, _schema())
    with pytest.raises(PolicyError, match="records.table: table 'documents' does not exist"):
        check_against_schema(only_docs, {})
    cols = _schema()["documents"]
    for missing, field in (
        ("customer_id", "records.subject"),
        ("delivered_at", "retention.anchor"),
        ("s3_key", r"locations\[0\]\.key"),
        ("archive_path", r"locations\[1\]\.path"),
    ):
        broken = {k: v for k, v in cols.items() if k != missing}
        with pytest.raises(PolicyError, match=rf"{FILE}: {field}: column '{missing}' does not exist"):
            check_against_schema(only_docs, {"documents": broken})
    with pytest.raises(PolicyError, match="is not a date or timestamp"):
        check_against_schema(only_docs, {"documents": {**cols, "delivered_at": ColumnInfo(sa.Text())}})


def test_schema_check_refuses_null_strategy_on_not_null_column() -> None:
    import sqlalchemy as sa

    ps = load_policies(POLICY_DIR)
    customers = type(ps)(
        (ps.get("customer_master_data"),), {"customer_master_data": "customer_master_data.yaml"}
    )
    cols = {c: ColumnInfo(sa.Text()) for c in ("name", "email", "phone", "address")}
    cols |= {"id": ColumnInfo(sa.BigInteger()), "last_activity_at": ColumnInfo(sa.DateTime())}
    check_against_schema(customers, {"customers": cols})
    cols["email"] = ColumnInfo(sa.Text(), nullable=False)
    with pytest.raises(
        PolicyError, match=r"locations\[0\]\.fields\.email: column customers.email is NOT NULL"
    ):
        check_against_schema(customers, {"customers": cols})


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
