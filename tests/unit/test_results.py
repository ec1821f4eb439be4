"""The typed seams: results and reasons, their one JSON crossing, the store registry, and the
pure rules of ``retention.flow`` that decide on them."""

from __future__ import annotations

import importlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from retention import flow, stores
from retention.errors import PolicyError, TerminalError
from retention.policy import load_policies, parse_policy
from retention.results import (
    CategoryPlan,
    DatabasePass,
    Decision,
    KeptByLaw,
    Proof,
    Reason,
    RunInfo,
    RunSummary,
    Skip,
    StepResult,
    Totals,
)
from retention.serde import from_json, to_json

POLICY_DIR = Path(__file__).resolve().parents[2] / "include" / "retention_policies"


def step(category: str, store: str, **kw: object) -> StepResult:
    base: dict[str, object] = {
        "run_id": "r",
        "category": category,
        "store": store,
        "mode": "due",
        "dry_run": False,
    }
    return StepResult(**{**base, **kw})  # type: ignore[arg-type]


def test_every_result_type_survives_the_json_crossing_unchanged() -> None:
    now = datetime(2026, 6, 15, 0, 0, tzinfo=UTC)
    values: list[object] = [
        step(
            "invoices",
            "database",
            erased=3,
            kept={Reason.LEGAL_HOLD: 2, Reason.STORAGE_LOCK: 1},
            kept_until={Reason.STORAGE_LOCK: "2030-01-01"},
            errors=("AccessDenied",),
            kept_by_law=KeptByLaw(4, "Bogføringsloven § 10", "2027-01-01", "2031-01-01"),
            verified=True,
        ),
        RunInfo(
            "r", "subject", now, True, "ab" * 32, ("a", "b"), {"a": ("s3", "database"), "b": ("database",)}
        ),
        CategoryPlan("a", ("s3", "database"), 5, 10, 1, {"table:x": 5, "table:y": -1}, True, "over", False),
        DatabasePass(
            (step("a", "database"),),
            {"b": Skip(Reason.BLOCKED_BY_DEPENDENCY, blocked_by="a"), "c": Skip(Reason.FAILED, error="X")},
        ),
        RunSummary(
            "r",
            "due",
            False,
            now,
            2,
            3,
            Totals(1, 2, 3, 4, 5),
            {"a": Skip(Reason.REJECTED)},
            Proof(("a/s3",), (), True, 7, "0" * 64),
        ),
    ]
    for value in values:
        data = to_json(value)
        assert from_json(type(value), data) == value, type(value).__name__
    # Reasons travel as their ledger values, not as Python names.
    assert to_json(values[0])["kept"] == {"legal_hold": 2, "storage_lock": 1}


def test_a_value_that_does_not_fit_is_refused_at_the_border_naming_the_field() -> None:
    data = to_json(step("a", "s3"))
    data["kept"] = {"because_i_said_so": 1}
    with pytest.raises(TerminalError, match=r"StepResult: kept\."):
        from_json(StepResult, data)
    with pytest.raises(TerminalError, match="RunInfo"):
        from_json(RunInfo, {"run_id": "r"})


def test_which_reasons_a_run_may_end_green_with() -> None:
    accepted = {r for r in Reason if r.accepted}
    assert accepted == {
        Reason.LEGAL_HOLD,
        Reason.STATUTORY,
        Reason.STORAGE_LOCK,
        Reason.AWAITING_APPROVAL,
        Reason.REJECTED,
        Reason.NO_ANSWER,
        Reason.POLICY_CHANGE,
    }
    assert {r for r in Reason if r.human_decision} == {
        Reason.AWAITING_APPROVAL,
        Reason.REJECTED,
        Reason.NO_ANSWER,
        Reason.POLICY_CHANGE,
    }


def test_a_blocked_category_inherits_its_dependency_s_verdict_through_a_chain() -> None:
    skipped = {
        "jobs": Skip(Reason.REJECTED),
        "customers": Skip(Reason.BLOCKED_BY_DEPENDENCY, blocked_by="jobs"),
        "docs": Skip(Reason.FILES_UNVERIFIED, store="s3"),
        "invoices": Skip(Reason.BLOCKED_BY_DEPENDENCY, blocked_by="docs"),
        "loop_a": Skip(Reason.BLOCKED_BY_DEPENDENCY, blocked_by="loop_b"),
        "loop_b": Skip(Reason.BLOCKED_BY_DEPENDENCY, blocked_by="loop_a"),
        "orphan": Skip(Reason.BLOCKED_BY_DEPENDENCY, blocked_by="nowhere"),
    }
    assert skipped["customers"].accepted(skipped)
    assert not skipped["invoices"].accepted(skipped)
    assert not skipped["loop_a"].accepted(skipped), "a cycle is never accepted"
    assert not skipped["orphan"].accepted(skipped), "a dependency without a skip is not accepted"


def test_skips_read_back_from_the_ledger_and_say_themselves_in_words() -> None:
    skip = Skip(Reason.FILES_UNVERIFIED, store="sftp")
    assert Skip.from_ledger(skip.reason.value, skip.detail()) == skip
    assert skip.words() == "sftp step not verified; its rows stay as the index"
    assert Skip(Reason.BLOCKED_BY_DEPENDENCY, blocked_by="jobs").words() == "blocked by jobs"
    assert Skip.from_ledger("blocked: jobs did not complete", None) is None, "old free text is no reason"
    assert Decision.APPROVED.skip is None and Decision.REJECTED.skip == Skip(Reason.REJECTED)


def test_the_registry_orders_file_stores_first_and_every_store_keeps_the_contract() -> None:
    assert stores.ORDER[-1] == stores.DATABASE and stores.DATABASE not in stores.FILE_STORES
    for spec in stores.STORES:
        module = importlib.import_module(spec.module)
        assert callable(module.build_target), spec.name
        adapters = [
            v for v in vars(module).values() if isinstance(v, type) and getattr(v, "store", None) == spec.name
        ]
        assert len(adapters) == 1, f"{spec.module} has one adapter class for {spec.name}"
        for method in ("locate", "named", "erase", "verify"):
            assert callable(getattr(adapters[0], method)), (spec.name, method)
    with pytest.raises(TerminalError, match="unknown store 'ftp'"):
        stores.spec("ftp")


def test_a_policy_may_name_any_registered_store_and_no_other(tmp_path: Path) -> None:
    text = (POLICY_DIR / "translation_documents.yaml").read_text()
    with_share = text.replace(
        '    path: "{archive_path}"',
        '    path: "{archive_path}"\n  - store: filesystem\n    path: "{archive_path}"',
    )
    policy = parse_policy(with_share, "translation_documents.yaml")
    assert policy.stores() == ["s3", "sftp", "filesystem", "database"]
    with pytest.raises(PolicyError, match=r"locations\[1\]"):
        parse_policy(text.replace("store: sftp", "store: ftp"), "translation_documents.yaml")


def test_the_database_waits_for_every_file_store_of_its_category_and_for_its_dependencies() -> None:
    policies = load_policies(POLICY_DIR)
    docs, jobs = policies.get("translation_documents"), policies.get("translation_jobs")
    assert "translation_documents" in jobs.after
    verified = [step("translation_documents", s, verified=True) for s in ("s3", "sftp")]
    assert flow.database_blocker(docs, verified, {}) is None
    assert flow.database_blocker(docs, verified[:1], {}) == Skip(Reason.FILES_UNVERIFIED, store="sftp")
    locked = [
        verified[0],
        step("translation_documents", "sftp", verified=True, kept={Reason.STORAGE_LOCK: 1}),
    ]
    assert flow.database_blocker(docs, locked, {}) is None, "a locked file keeps its own row only"
    held = [verified[0], step("translation_documents", "sftp", verified=True, kept={Reason.LEGAL_HOLD: 1})]
    assert flow.database_blocker(docs, held, {}) is None, "held files are kept by the rows' own hold check"
    waiting = {"translation_documents": Skip(Reason.AWAITING_APPROVAL)}
    assert flow.database_blocker(jobs, [], waiting) == Skip(
        Reason.BLOCKED_BY_DEPENDENCY, blocked_by="translation_documents"
    )


def test_a_plan_that_needed_a_human_and_got_no_answer_erases_nothing() -> None:
    now = datetime(2026, 6, 15, tzinfo=UTC)
    run = RunInfo(
        "r",
        "due",
        now,
        False,
        "0" * 64,
        ("a", "b", "c"),
        {"a": ("database",), "b": ("database",), "c": ("database",)},
    )
    over = CategoryPlan("a", ("database",), 9, 10, 0, {}, True, "over the cap")
    under = CategoryPlan("b", ("database",), 1, 10, 0, {}, False, None)
    decided = flow.decisions(run, {"a": over, "b": under, "c": None}, {"a": None})
    assert decided == {"a": Decision.NO_ANSWER}
    assert flow.not_run(decided) == {"a": Skip(Reason.NO_ANSWER)}
    assert flow.decisions(run, {"a": over}, {"a": Decision.APPROVED}) == {"a": Decision.APPROVED}
    dry = RunInfo("r", "due", now, True, "0" * 64, ("a",), {"a": ("database",)})
    assert flow.decisions(dry, {"a": over}, {}) == {}, "a dry run asks nobody"
