"""The legal-hold registry on SQLite files: what is in force when, for which category."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from retention.adapters.base import HoldSet
from retention.errors import TerminalError, UnsafeTargetError
from retention.holds import HoldRegistry
from retention.subject import DEFAULT_SUBJECT, SubjectFormat

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
CATEGORIES = ("invoices", "documents", "emails")


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'holds.db'}")
    yield engine
    engine.dispose()


@pytest.fixture
def holds(engine: Engine) -> HoldRegistry:
    registry = HoldRegistry(engine)
    registry.ensure_schema()
    return registry


def test_a_subject_hold_is_in_force_until_released(holds: HoldRegistry) -> None:
    hold = holds.add(reason="Retssag BS-1234/2026", subject="17", now=NOW)
    assert holds.current("invoices", NOW + DAY) == HoldSet(subjects=frozenset({"17"}))
    holds.release(hold, now=NOW + 2 * DAY)
    assert holds.current("invoices", NOW + 3 * DAY) == HoldSet()
    # evaluated at an instant before the release, the hold was still in force
    assert holds.current("invoices", NOW + DAY).subject_held("17")


def test_release_keeps_the_row_and_is_idempotent(holds: HoldRegistry) -> None:
    hold = holds.add(reason="audit", subject="17", now=NOW)
    holds.release(hold, now=NOW + DAY)
    holds.release(hold, now=NOW + 5 * DAY)
    [row] = holds.list(include_inactive=True)
    assert (row["id"], row["released_at"]) == (hold, NOW + DAY)
    assert holds.list(now=NOW + 2 * DAY) == []


def test_releasing_an_unknown_hold_fails(holds: HoldRegistry) -> None:
    with pytest.raises(TerminalError, match="no legal hold"):
        holds.release(42, now=NOW)


def test_until_in_the_future_holds_and_in_the_past_does_not(holds: HoldRegistry) -> None:
    holds.add(reason="tvist", subject="101", until=NOW + DAY, now=NOW)
    holds.add(reason="tvist", subject="102", until=NOW + 30 * DAY, now=NOW)
    assert holds.current("documents", NOW + DAY / 2).subjects == {"101", "102"}
    assert holds.current("documents", NOW + DAY).subjects == {"102"}  # until is exclusive
    assert holds.current("documents", NOW + 31 * DAY).subjects == frozenset()


def test_until_must_lie_after_creation(holds: HoldRegistry) -> None:
    with pytest.raises(TerminalError, match="until"):
        holds.add(reason="tvist", subject="17", until=NOW, now=NOW)
    with pytest.raises(TerminalError, match="until"):
        holds.add(reason="tvist", subject="17", until=NOW - DAY, now=NOW)


def test_timestamps_are_compared_as_instants_whatever_their_offset(holds: HoldRegistry) -> None:
    copenhagen_summer = timezone(timedelta(hours=2))
    until = datetime(2026, 6, 20, 14, 0, tzinfo=copenhagen_summer)  # 12:00 UTC
    holds.add(reason="tvist", subject="17", until=until, now=NOW)
    assert holds.current("x", datetime(2026, 6, 20, 11, 59, tzinfo=UTC)).subject_held("17")
    assert not holds.current("x", datetime(2026, 6, 20, 12, 0, tzinfo=UTC)).subject_held("17")
    [row] = holds.list(now=NOW)
    assert row["until"] == until and row["until"].tzinfo == UTC
    assert row["created_at"] == NOW


def test_naive_timestamps_are_refused(holds: HoldRegistry) -> None:
    naive = datetime(2026, 6, 15, 12, 0)
    with pytest.raises(TerminalError):
        holds.add(reason="tvist", subject="17", now=naive)
    with pytest.raises(TerminalError):
        holds.add(reason="tvist", subject="17", until=naive, now=NOW)
    with pytest.raises(TerminalError):
        holds.current("x", naive)


def test_category_holds_apply_to_their_category_and_global_holds_to_all(holds: HoldRegistry) -> None:
    holds.add(reason="revision", subject="201", category="invoices", categories=CATEGORIES, now=NOW)
    holds.add(reason="retssag", subject="200", now=NOW)
    holds.add(reason="klage", subject="202", category="documents", categories=CATEGORIES, now=NOW)
    holds.add(reason="klage", prefix="documents/17/", category="documents", categories=CATEGORIES, now=NOW)
    assert holds.current("invoices", NOW) == HoldSet(subjects=frozenset({"201", "200"}))
    assert holds.current("documents", NOW) == HoldSet(
        subjects=frozenset({"202", "200"}), prefixes=("documents/17/",)
    )
    assert holds.current("emails", NOW) == HoldSet(subjects=frozenset({"200"}))


def test_a_prefix_hold_covers_everything_under_it(holds: HoldRegistry) -> None:
    holds.add(reason="klage", prefix="documents/17/", now=NOW)
    held = holds.current("documents", NOW)
    assert held.path_held("documents/17/contract.pdf")
    assert held.path_held("documents/17/2019/letter.pdf")
    assert not held.path_held("documents/171/contract.pdf")
    assert not held.subject_held("17")


@pytest.mark.parametrize(
    "prefix", ["", "/", "/etc/", "../documents/", "documents/../x/", "a//b/", "a\\b/", "a/\x00/"]
)
def test_unsafe_prefixes_are_refused(holds: HoldRegistry, prefix: str) -> None:
    with pytest.raises(UnsafeTargetError):
        holds.add(reason="klage", prefix=prefix, now=NOW)
    assert holds.list(include_inactive=True) == []


@pytest.mark.parametrize(
    ("subject", "prefix"),
    [(None, None), ("17", "documents/17/"), ("", None), (" 17", None), ("17\n", None)],
)
def test_a_hold_covers_exactly_one_clean_subject_or_prefix(
    holds: HoldRegistry, subject: str | None, prefix: str | None
) -> None:
    with pytest.raises(TerminalError):
        holds.add(reason="klage", subject=subject, prefix=prefix, now=NOW)


@pytest.mark.parametrize("reason", ["", "   ", "ring 12 34 56 78", "jens@example.dk"])
def test_a_hold_needs_a_reason_without_contact_data(holds: HoldRegistry, reason: str) -> None:
    with pytest.raises(TerminalError) as refused:
        holds.add(reason=reason, subject="17", now=NOW)
    assert reason.strip() == "" or reason not in str(refused.value)


@pytest.mark.parametrize("category", ["", " invoices"])
def test_a_category_must_be_a_clean_name(holds: HoldRegistry, category: str) -> None:
    with pytest.raises(TerminalError):
        holds.add(reason="klage", subject="17", category=category, categories=CATEGORIES, now=NOW)
    with pytest.raises(TerminalError):
        holds.current(category, NOW)


def test_holds_in_force_are_read_for_one_category(holds: HoldRegistry) -> None:
    with pytest.raises(TerminalError):
        holds.current(None, NOW)  # type: ignore[arg-type]


def test_reports_name_subjects_only_when_asked(holds: HoldRegistry) -> None:
    first = holds.add(
        reason="retssag", subject="4717", category="invoices", categories=CATEGORIES, until=NOW + DAY, now=NOW
    )
    second = holds.add(reason="klage", prefix="documents/17/", now=NOW)
    report = holds.list(now=NOW)
    assert [(r["id"], r["kind"], r["category"], r["reason"]) for r in report] == [
        (first, "subject", "invoices", "retssag"),
        (second, "prefix", None, "klage"),
    ]
    assert "4717" not in repr(report) and "documents/17/" not in repr(report)
    detailed = holds.list(now=NOW, include_subjects=True)
    assert [(r["subject"], r["prefix"]) for r in detailed] == [("4717", None), (None, "documents/17/")]
    assert [r["id"] for r in holds.list(now=NOW + 2 * DAY)] == [second]
    assert [r["id"] for r in holds.list(now=NOW + 2 * DAY, include_inactive=True)] == [first, second]


def test_ensure_schema_is_idempotent_and_the_table_name_is_configurable(engine: Engine) -> None:
    registry = HoldRegistry(engine, table_name="holds_demo")
    registry.ensure_schema()
    hold = registry.add(reason="klage", subject="17", now=NOW)
    registry.ensure_schema()
    assert [r["id"] for r in registry.list(now=NOW)] == [hold]
    assert sa.inspect(engine).get_table_names() == ["holds_demo"]
    with pytest.raises(TerminalError):
        HoldRegistry(engine, table_name="Holds-Demo")


def test_the_database_itself_refuses_a_row_with_both_subject_and_prefix(
    holds: HoldRegistry, engine: Engine
) -> None:
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO retention_legal_holds (subject, prefix, reason, created_at) "
                "VALUES ('17', 'documents/', 'x', '2026-06-15 12:00:00.000000')"
            )
        )


# -- issue #10.3: one canonical form for subjects, known categories, clean prefixes ----------------
# (#11: the form is the deployment's SubjectFormat; these are the default format's refusals)

NOT_CANONICAL = [
    ("042", "leading zero"),  # int() reads it as 42: the database held customer 42, S3 and SFTP did not
    ("0", "zero"),
    ("٤٢", "other than 0-9"),  # Arabic-Indic digits: "٤٢".isdigit() and int("٤٢") == 42
    ("４２", "other than 0-9"),  # full-width digits
    ("²", "other than 0-9"),  # isdigit() is True, int() raises ValueError: it crashed every run
    (" 42", "whitespace"),
    ("42 ", "whitespace"),
    ("42\n", "whitespace"),
    ("", "empty"),
    ("4.2", "does not match the format"),
    ("-42", "starts with a character other than a letter or digit"),
    ("+42", "starts with a character other than a letter or digit"),
    ("42a", "does not match the format"),
    ("kunde@example.dk", "character other than ASCII letters, digits"),
    ("1234567890123", "longer than 12 characters"),
    ("0042", "leading zero"),
    ("00", "zero"),
]


@pytest.mark.parametrize(("value", "problem"), NOT_CANONICAL, ids=[repr(v) for v, _ in NOT_CANONICAL])
def test_the_default_format_refuses_every_other_form_naming_the_problem_not_the_value(
    value: str, problem: str
) -> None:
    with pytest.raises(TerminalError, match=problem) as refused:
        DEFAULT_SUBJECT.check(value, "hold subject")
    message = str(refused.value)
    assert message.startswith("hold subject must be the internal customer id")
    assert len(value.strip()) < 2 or value.strip() not in message


@pytest.mark.parametrize(("value", "problem"), [(None, "missing"), (42, "int, not text"), (b"42", "bytes")])
def test_the_default_format_refuses_what_is_not_text(value: object, problem: str) -> None:
    with pytest.raises(TerminalError, match=problem):
        DEFAULT_SUBJECT.check(value)


@pytest.mark.parametrize("value", ["1", "42", "4711", "999999999999"])
def test_the_default_format_returns_a_canonical_id_unchanged(value: str) -> None:
    assert DEFAULT_SUBJECT.check(value) is value


@pytest.mark.parametrize(("subject", "problem"), NOT_CANONICAL, ids=[repr(v) for v, _ in NOT_CANONICAL])
def test_a_hold_on_a_subject_in_any_other_form_is_refused_and_nothing_is_stored(
    holds: HoldRegistry, subject: str, problem: str
) -> None:
    with pytest.raises(TerminalError, match=problem) as refused:
        holds.add(reason="Retssag BS-1234/2026", subject=subject, now=NOW)
    assert len(subject.strip()) < 2 or subject.strip() not in str(refused.value)
    assert holds.list(include_inactive=True) == []


def test_a_canonical_hold_matches_the_record_subject_as_every_file_store_reads_it(
    holds: HoldRegistry,
) -> None:
    from retention.adapters.s3 import S3Version, _held
    from retention.adapters.tree import TreeItem, held, subject_of

    holds.add(reason="Retssag BS-1234/2026", subject="42", now=NOW)
    current = holds.current("documents", NOW)
    record = {"customer_id": 42}  # an integer column, as the business database returns it
    subject = subject_of(record, "customer_id")
    assert current.subject_held(subject)
    assert held(current, TreeItem("2019/42/contract.pdf", subject))  # SFTP and filesystem
    assert _held(
        S3Version("documents/42/a.pdf", "v1", False, frozenset({str(record["customer_id"])})), current
    )
    assert not current.subject_held("420") and not current.subject_held(None)


def test_a_hold_in_an_unknown_category_is_refused(holds: HoldRegistry) -> None:
    with pytest.raises(TerminalError, match="not one of the policy set's categories.*protect nothing"):
        holds.add(reason="revision", subject="17", category="invoice", categories=CATEGORIES, now=NOW)
    assert holds.list(include_inactive=True) == []


def test_a_category_is_checked_against_the_policy_set_or_not_accepted(holds: HoldRegistry) -> None:
    with pytest.raises(TerminalError, match="policy set's categories"):
        holds.add(reason="revision", subject="17", category="invoices", now=NOW)
    with pytest.raises(TerminalError, match="collection of category ids"):
        # a text is a collection of its letters: "invoice" in "invoices" must not pass
        holds.add(reason="revision", subject="17", category="invoice", categories="invoices", now=NOW)
    assert holds.list(include_inactive=True) == []
    # a hold in every category needs no policy set
    assert holds.add(reason="revision", subject="17", now=NOW) > 0


@pytest.mark.parametrize(
    "prefix",
    [
        " documents/17/",
        "documents/17/ ",
        "\u00a0documents/",
        "documents/17/\u2003",
        "documents/\x85/",
        "a/\x9b/",
    ],
)
def test_a_padded_prefix_or_one_with_a_control_character_is_refused(holds: HoldRegistry, prefix: str) -> None:
    with pytest.raises(UnsafeTargetError):
        holds.add(reason="klage", prefix=prefix, now=NOW)
    assert holds.list(include_inactive=True) == []


def _insert(engine: Engine, **values: object) -> int:
    """A hold written by hand, past every check (as someone with SQL access could)."""
    row = {"subject": None, "prefix": None, "category": None, "reason": "by hand", **values}
    with engine.begin() as conn:
        return int(
            conn.execute(
                sa.text(
                    "INSERT INTO retention_legal_holds (subject, prefix, category, reason, created_at) "
                    "VALUES (:subject, :prefix, :category, :reason, '2026-06-01 00:00:00.000000') "
                    "RETURNING id"
                ),
                row,
            ).scalar_one()
        )


STORED_BAD = [
    ({"subject": "042"}, "leading zero", "042"),
    ({"subject": "٤٢"}, "other than 0-9", "٤٢"),
    ({"subject": "²"}, "other than 0-9", "²"),
    ({"subject": " 4711"}, "whitespace", "4711"),
    ({"subject": b"4711"}, "bytes, not text", "4711"),
    ({"prefix": "/etc/"}, "absolute", "/etc/"),
    ({"prefix": " documents/"}, "whitespace", "documents/"),
    ({"prefix": "documents/../x/"}, "segment", "documents/../x/"),
    ({"subject": "4711", "category": "invoice"}, "not one of the policy set's categories", "4711"),
    ({"subject": "4711", "category": " invoices"}, "not one of the policy set's categories", "4711"),
    ({"subject": "4711", "reason": "   "}, "needs a reason", "4711"),
    ({"subject": "4711", "reason": "ring 12 34 56 78"}, "phone", "12 34 56 78"),
]


@pytest.mark.parametrize(("values", "problem", "secret"), STORED_BAD, ids=[repr(v) for v, _, _ in STORED_BAD])
def test_check_stored_names_the_invalid_hold_by_id_and_never_its_value(
    holds: HoldRegistry, engine: Engine, values: dict[str, object], problem: str, secret: str
) -> None:
    holds.add(reason="retssag", subject="17", now=NOW)
    bad = _insert(engine, **values)
    with pytest.raises(TerminalError, match=problem) as refused:
        holds.check_stored(CATEGORIES, NOW)
    message = str(refused.value)
    assert message.startswith(f"legal hold {bad} is invalid")
    assert secret not in message


def test_check_stored_counts_the_valid_holds_in_force_and_ignores_ended_ones(
    holds: HoldRegistry, engine: Engine
) -> None:
    assert holds.check_stored(CATEGORIES, NOW) == 0
    holds.add(reason="retssag", subject="17", now=NOW)
    holds.add(reason="klage", prefix="documents/17/", category="documents", categories=CATEGORIES, now=NOW)
    holds.add(reason="tvist", subject="18", until=NOW + DAY, now=NOW)
    holds.release(_insert(engine, subject="042"), now=NOW)  # released: protects nothing, harms nothing
    assert holds.check_stored(CATEGORIES, NOW + DAY / 2) == 3
    assert holds.check_stored(CATEGORIES, NOW + 2 * DAY) == 2
    with pytest.raises(TerminalError, match="collection of category ids"):
        holds.check_stored("documents", NOW)


@pytest.mark.parametrize("subject", ["042", "²", "٤٢", " 17"])
def test_current_raises_a_clear_error_for_a_stored_subject_no_store_can_compare(
    holds: HoldRegistry, engine: Engine, subject: str
) -> None:
    holds.add(reason="retssag", subject="17", now=NOW)
    assert holds.current("documents", NOW).subjects == {"17"}
    bad = _insert(engine, subject=subject)
    with pytest.raises(TerminalError, match=f"^legal hold {bad} is invalid: its subject") as refused:
        holds.current("documents", NOW)
    assert subject.strip() not in str(refused.value)


def test_current_raises_for_a_bad_prefix_of_its_category_and_not_for_another(
    holds: HoldRegistry, engine: Engine
) -> None:
    bad = _insert(engine, prefix="/srv/archive/", category="invoices")
    assert holds.current("documents", NOW) == HoldSet()  # check_stored is what catches it there
    with pytest.raises(TerminalError, match=f"legal hold {bad} is invalid: hold prefix is absolute"):
        holds.current("invoices", NOW)
    with pytest.raises(TerminalError, match=f"legal hold {bad}"):
        holds.check_stored(CATEGORIES, NOW)
    holds.release(bad, now=NOW)
    assert holds.current("invoices", NOW + DAY) == HoldSet()


# -- #11: a deployment's own customer-id format ------------------------------------------------------

K_POLICIES = Path(__file__).resolve().parents[1] / "fixtures" / "k_deployment" / "policies"


@pytest.fixture
def k_format() -> SubjectFormat:
    from retention.policy import load_policies

    return load_policies(K_POLICIES).subject


def test_a_registry_checks_subjects_against_the_deployment_s_format(
    engine: Engine, k_format: SubjectFormat
) -> None:
    registry = HoldRegistry(engine, subject_format=k_format)
    registry.ensure_schema()
    registry.add(reason="Retssag BS-1234/2026", subject="K-00042", now=NOW)
    assert registry.current("orders", NOW).subjects == {"K-00042"}
    assert registry.check_stored(["orders", "customers"], NOW) == 1
    for subject, problem in [("42", "does not match the format"), ("k-00042", "wrong case")]:
        with pytest.raises(TerminalError, match=f"^hold subject must be the customer number.*{problem}"):
            registry.add(reason="Retssag BS-1234/2026", subject=subject, now=NOW)
    assert [h["subject"] for h in registry.list(include_subjects=True)] == ["K-00042"]


def test_a_hold_of_one_format_is_invalid_under_another_and_named_by_id(
    engine: Engine, k_format: SubjectFormat
) -> None:
    k_registry = HoldRegistry(engine, subject_format=k_format)
    k_registry.ensure_schema()
    digits = _insert(engine, subject="42")
    with pytest.raises(
        TerminalError, match=f"^legal hold {digits} is invalid: its subject must be the customer"
    ):
        k_registry.check_stored(["orders"], NOW)
    with pytest.raises(TerminalError, match=f"^legal hold {digits} is invalid"):
        k_registry.current("orders", NOW)
    k_registry.release(digits, now=NOW)
    k_registry.add(reason="Retssag BS-1234/2026", subject="K-00042", now=NOW)
    assert k_registry.current("orders", NOW + DAY).subjects == {"K-00042"}
    # The same table read with the default format: the K hold is one no store of that deployment could match.
    with pytest.raises(TerminalError, match="is invalid: its subject must be the internal customer id"):
        HoldRegistry(engine).current("orders", NOW + DAY)
