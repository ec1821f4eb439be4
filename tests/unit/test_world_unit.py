"""The reference world on SQLite (no other service): determinism, fates, FK consistency, canaries."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, inspect, select, text

from harness import world_text
from harness.world_rules import MARGIN, NOW, RULE_BY_TABLE, RULES, TABLES
from harness.world_schema import SYSTEM_TABLES, metadata
from harness.world_size import WorldSize
from harness.world_stores import generate
from harness.world_truth import Fate, Profile, World
from retention.holds import HoldRegistry

NULLABLE_ANCHORS = {"translation_jobs", "documents", "marketing_consents", "privacy_requests"}


def _sqlite(path: Path) -> Engine:
    return create_engine(f"sqlite:///{path}")


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Engine, World]]:
    """The small world, generated once into an SQLite file."""
    engine = _sqlite(tmp_path_factory.mktemp("world") / "business.db")
    world = generate(engine, size=WorldSize.small())
    yield engine, world
    engine.dispose()


def _dump(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    with engine.connect() as conn:
        return {
            t: [tuple(r) for r in conn.execute(select(metadata.tables[t]).order_by(text("id")))]
            for t in TABLES
        }


def _generate_and_dump(path: Path, seed: int) -> tuple[dict[str, list[tuple[Any, ...]]], World]:
    engine = _sqlite(path)
    world = generate(engine, size=WorldSize.small(), seed=seed)
    rows = _dump(engine)
    engine.dispose()
    return rows, world


def _anchors(engine: Engine, table: str) -> dict[int, Any]:
    t = metadata.tables[table]
    with engine.connect() as conn:
        return dict(conn.execute(select(t.c.id, t.c[RULE_BY_TABLE[table].anchor])).all())


def _utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; the world stores UTC."""
    return value.replace(tzinfo=UTC)


# --- determinism -------------------------------------------------------------------------------


def test_same_seed_gives_an_identical_world_and_another_seed_does_not(tmp_path: Path) -> None:
    rows_a, world_a = _generate_and_dump(tmp_path / "a.db", seed=7)
    rows_b, world_b = _generate_and_dump(tmp_path / "b.db", seed=7)
    rows_c, _ = _generate_and_dump(tmp_path / "c.db", seed=8)

    assert sum(len(r) for r in rows_a.values()) == sum(WorldSize.small().rows(t) for t in TABLES)
    assert rows_a == rows_b
    assert world_a.expected_after_nightly() == world_b.expected_after_nightly()
    assert world_a.held_customers == world_b.held_customers
    assert world_a.s3_objects() == world_b.s3_objects()
    assert world_a.canaries(3) == world_b.canaries(3)
    for table in ("customers", "correspondence", "documents"):
        assert rows_a[table] != rows_c[table], table


# --- rules and cutoffs -------------------------------------------------------------------------


def test_cutoffs_at_the_reference_now() -> None:
    assert NOW.astimezone(UTC) == datetime(2026, 6, 15, 0, 0, tzinfo=UTC)
    expected_years = {
        "customers": 5, "contact_persons": 3, "translation_jobs": 5, "documents": 1,
        "interpreting_assignments": 2, "marketing_consents": 2, "third_party_data": 1,
        "correspondence": 3, "privacy_requests": 5,
    }  # fmt: skip
    for table, years in expected_years.items():
        assert RULE_BY_TABLE[table].cutoff() == datetime(2026 - years, 6, 15, 0, 0, tzinfo=UTC), table
    # Invoices: due from 1 January after the invoice year + 5 years, so 2020 is due and 2021 is not.
    assert RULE_BY_TABLE["invoices"].cutoff() == date(2021, 1, 1)


def test_rule_due_edges() -> None:
    correspondence = RULE_BY_TABLE["correspondence"]
    cutoff = datetime(2023, 6, 15, 0, 0, tzinfo=UTC)
    assert correspondence.is_due(cutoff)
    assert not correspondence.is_due(cutoff + timedelta(seconds=1))
    assert not correspondence.is_due(None)
    invoices = RULE_BY_TABLE["invoices"]
    assert invoices.is_due(date(2020, 12, 31))
    assert not invoices.is_due(date(2021, 1, 1))
    # The financial year ends at midnight Danish time: 31 Dec 2025 23:00 UTC is 1 Jan 2026 in Copenhagen.
    assert invoices.is_due(date(2020, 6, 1), datetime(2025, 12, 31, 23, 0, tzinfo=UTC))
    assert not invoices.is_due(date(2020, 6, 1), datetime(2025, 12, 31, 22, 59, tzinfo=UTC))


def test_rules_name_real_indexed_columns() -> None:
    for rule in RULES:
        table = metadata.tables[rule.table]
        indexed = {c.name for ix in table.indexes for c in ix.columns} | {"id"}
        assert rule.anchor in indexed, rule.table
        assert rule.subject in indexed, rule.table
        assert set(rule.columns) | set(rule.files) <= set(table.c.keys()), rule.table
        assert (rule.action == "anonymise") == bool(rule.columns), rule.table
    assert {r.table for r in RULES} == set(metadata.tables) - set(SYSTEM_TABLES) == set(TABLES)


# --- fates -------------------------------------------------------------------------------------


def test_fates_respect_the_cutoffs_with_margin(small: tuple[Engine, World]) -> None:
    engine, world = small
    for rule in RULES:
        anchors = _anchors(engine, rule.table)
        cutoff = rule.cutoff(NOW)
        for row_id, anchor in anchors.items():
            if anchor is None:
                continue
            if isinstance(cutoff, datetime):
                distance = abs(_utc(anchor) - cutoff)
            else:
                # a financial year's anchor is its end: 1 January (Danish time) of the next year
                year_end = datetime(anchor.year + 1, 1, 1, tzinfo=UTC) - timedelta(hours=1)
                distance = abs(year_end.replace(year=year_end.year + rule.years) - NOW.astimezone(UTC))
            assert distance >= MARGIN, (rule.table, row_id)
        null = {i for i, a in anchors.items() if a is None}
        due = {
            i
            for i, a in anchors.items()
            if a is not None and (_utc(a) <= cutoff if isinstance(cutoff, datetime) else a < cutoff)
        }
        assert due == {i for i, a in anchors.items() if rule.is_due(a, NOW)}, rule.table
        assert due == world.due_ids(rule.table), rule.table
        assert null == world.ids(rule.table, Fate.NULL), rule.table
        assert set(anchors) - due - null == world.ids(rule.table, Fate.NOT_DUE), rule.table


def test_nothing_happens_after_now(small: tuple[Engine, World]) -> None:
    engine, _ = small
    latest = NOW.astimezone(UTC)
    with engine.connect() as conn:
        for table in TABLES:
            for column in metadata.tables[table].columns:
                if column.type.python_type is datetime:
                    value = conn.execute(select(column).order_by(column.desc()).limit(1)).scalar()
                    assert value is None or _utc(value) < latest, f"{table}.{column.name}"


def test_small_world_has_every_kind_of_row_in_every_table(small: tuple[Engine, World]) -> None:
    _, world = small
    for table in TABLES:
        counts = world.counts(table)
        assert counts.total == WorldSize.small().rows(table), table
        assert counts.due > counts.due_held > 0, table
        assert counts.not_due > 0, table
        assert (counts.null > 0) == (table in NULLABLE_ANCHORS), table
    assert len(world.held_customers) == round(50 * WorldSize.small().held_fraction)


def test_expected_after_nightly_partitions_the_due_rows_by_hold(small: tuple[Engine, World]) -> None:
    _, world = small
    expected = world.expected_after_nightly()
    for rule in RULES:
        outcome = expected[rule.table]
        erased = outcome["deleted"] | outcome["anonymised"]
        assert not outcome["anonymised" if rule.action == "delete" else "deleted"], rule.table
        assert erased | outcome["kept_hold"] == world.due_ids(rule.table), rule.table
        assert not erased & outcome["kept_hold"], rule.table
        counts = world.expected_counts_after_nightly()[rule.table]
        assert {k: len(v) for k, v in outcome.items()} == counts, rule.table
    for cid in world.held_customers:
        inventory = world.customer_inventory(cid)
        for table, ids in inventory.rows.items():
            assert not ids & (expected[table]["deleted"] | expected[table]["anonymised"]), (cid, table)


def test_dormant_customers_are_due_everywhere_and_active_ones_nowhere(small: tuple[Engine, World]) -> None:
    _, world = small
    dormant = world.customers_with(Profile.DORMANT)
    active = world.customers_with(Profile.ACTIVE)
    assert dormant and active
    for cid in dormant:
        for table, ids in world.customer_inventory(cid).rows.items():
            assert ids and ids <= world.due_ids(table), (cid, table)
    for cid in active:
        for table, ids in world.customer_inventory(cid).rows.items():
            assert ids and not ids & world.due_ids(table), (cid, table)


# --- consistency -------------------------------------------------------------------------------


def test_foreign_keys_and_documents_follow_their_jobs(small: tuple[Engine, World]) -> None:
    engine, world = small
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA foreign_key_check")).all() == []
        mismatched = conn.execute(
            text(
                "SELECT d.id FROM documents d JOIN translation_jobs j ON j.id = d.job_id "
                "WHERE d.customer_id <> j.customer_id OR d.delivered_at IS NOT j.delivered_at"
            )
        ).all()
        assert mismatched == []
        docs_of_due_jobs = {
            r[0]
            for r in conn.execute(text("SELECT id, job_id FROM documents"))
            if r[1] in world.due_ids("translation_jobs")
        }
        keys: dict[int, str] = dict(conn.execute(text("SELECT id, s3_key FROM documents")).all())
        archive: dict[int, str | None] = dict(
            conn.execute(text("SELECT id, archive_path FROM documents")).all()
        )
        owners: dict[int, str] = dict(
            conn.execute(text("SELECT id, customer_id || '/' || job_id FROM documents")).all()
        )
    assert docs_of_due_jobs and docs_of_due_jobs <= world.due_ids("documents")
    assert set(keys.values()) == set(world.s3_objects())
    assert {p for p in archive.values() if p} == world.archive_paths()
    for doc_id, key in keys.items():
        assert key == f"documents/{owners[doc_id]}/{doc_id}.txt"
        assert archive[doc_id] in (None, f"{owners[doc_id]}/{doc_id}.txt")


def test_rows_and_ids_match_the_ground_truth(small: tuple[Engine, World]) -> None:
    engine, world = small
    with engine.connect() as conn:
        for table in TABLES:
            ids = set(conn.execute(text(f"SELECT id FROM {table}")).scalars())  # noqa: S608 - fixed names
            assert ids == world.ids(table) == set(range(1, world.counts(table).total + 1)), table


def test_document_files_are_counted_exactly(small: tuple[Engine, World]) -> None:
    _, world = small
    size = WorldSize.small()
    versions = world.s3_objects()
    assert world.files.objects == len(versions) == size.documents
    assert world.files.versions == sum(versions.values())
    assert set(versions.values()) == set(range(size.min_versions, size.max_versions + 1))
    assert world.files.archive_files == len(world.archive_paths()) == round(100 * size.archive_fraction)
    gone = world.s3_keys_expected_gone()
    assert world.files.objects_gone == len(gone)
    assert world.files.versions_gone == sum(versions[k] for k in gone)
    assert world.files.archive_files_gone == len(world.archive_paths_expected_gone())
    assert world.unrelated_objects == {}


# --- canaries ----------------------------------------------------------------------------------


def _text_values_by_owner(engine: Engine) -> list[tuple[int, str]]:
    """(customer id, text) for every text value of every row."""
    found: list[tuple[int, str]] = []
    with engine.connect() as conn:
        for table in TABLES:
            t = metadata.tables[table]
            owner = t.c.id if table == "customers" else t.c.customer_id
            columns = [c for c in t.columns if c.type.python_type is str]
            for row in conn.execute(select(owner, *columns)):
                found.extend((row[0], v.lower()) for v in row[1:] if v)
    return found


def test_canaries_occur_only_in_their_customers_rows(small: tuple[Engine, World]) -> None:
    engine, world = small
    values = _text_values_by_owner(engine)
    for cid in range(1, world.size.customers + 1):
        c = world.canaries(cid)
        for canary in (c.name, c.email, c.phone):
            owners = {owner for owner, value in values if canary.lower() in value}
            assert owners == {cid}, (cid, canary)
        assert not any(c.phrase.lower() in value for _, value in values), "phrases live in documents only"


def test_canaries_are_unique_across_many_customers(tmp_path: Path) -> None:
    size = dataclasses.replace(
        WorldSize.small(), customers=5_000, jobs_per_customer=0, documents=0, contact_persons=0,
        interpreting=0, invoices=0, consents=0, third_party=0, correspondence=0, privacy_requests=0,
    )  # fmt: skip
    world = generate(_sqlite(tmp_path / "many.db"), size=size)
    canaries = [world.canaries(cid) for cid in range(1, 5_001)]
    for field in ("name", "email", "phone", "phrase"):
        assert len({getattr(c, field) for c in canaries}) == 5_000, field
    with pytest.raises(KeyError):
        world.canaries(5_001)


def test_name_words_never_contain_one_another() -> None:
    lists = (world_text.FIRST_NAMES, world_text.MIDDLE_NAMES, world_text.LAST_NAMES)
    words = [w.lower() for names in lists for w in names]
    assert len(words) == len(set(words))
    clashes = [(a, b) for a in words for b in words if a != b and a in b]
    assert clashes == []


# --- holds, truth and options ------------------------------------------------------------------


def test_held_customers_are_registered_as_legal_holds(tmp_path: Path) -> None:
    business, holds = _sqlite(tmp_path / "business.db"), _sqlite(tmp_path / "holds.db")
    world = generate(business, size=WorldSize.small(), holds_engine=holds)
    registered = HoldRegistry(holds).current("documents", NOW)
    assert registered.subjects == {str(c) for c in world.held_customers}
    assert registered.prefixes == ()
    for hold in HoldRegistry(holds).list(now=NOW):
        assert hold["until"] is None and hold["reason"] and hold["created_at"] < NOW
    assert "retention_legal_holds" not in inspect(business).get_table_names()


def test_keep_truth_false_keeps_counts_only(small: tuple[Engine, World], tmp_path: Path) -> None:
    _, full = small
    lean = generate(_sqlite(tmp_path / "lean.db"), size=WorldSize.small(), keep_truth=False)
    for table in TABLES:
        assert lean.counts(table) == full.counts(table), table
    assert lean.files == full.files
    assert lean.expected_counts_after_nightly() == full.expected_counts_after_nightly()
    assert lean.canaries(7) == full.canaries(7)
    with pytest.raises(RuntimeError, match="keep_truth=False"):
        lean.due_ids("correspondence")
    with pytest.raises(RuntimeError, match="keep_truth=False"):
        lean.s3_keys_expected_gone()


def test_progress_goes_to_stderr_only_when_asked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    generate(_sqlite(tmp_path / "quiet.db"), size=WorldSize.small())
    quiet = capsys.readouterr()
    generate(_sqlite(tmp_path / "loud.db"), size=WorldSize.small(), progress=True)
    loud = capsys.readouterr()
    assert quiet.out == quiet.err == loud.out == ""
    assert "correspondence: 150/150 rows" in loud.err and "rows/s" in loud.err


def test_world_sizes() -> None:
    bench = WorldSize.benchmark()
    assert (bench.correspondence, bench.documents) == (2_000_000, 20_000)
    assert bench.min_versions == bench.max_versions == 2
    assert round(bench.documents * bench.archive_fraction) == 5_000
    assert sum(WorldSize.demo().rows(t) for t in TABLES) > sum(WorldSize.small().rows(t) for t in TABLES)
    for bad in ({"due_fraction": 1.5}, {"min_versions": 0}, {"min_versions": 3, "max_versions": 2},
                {"customers": 0}, {"correspondence": -1}):  # fmt: skip
        with pytest.raises(ValueError):
            dataclasses.replace(WorldSize.small(), **bad)
    with pytest.raises(ValueError):
        generate(_sqlite(Path("/nonexistent/never-created.db")), size=WorldSize.small(), bucket="b")
