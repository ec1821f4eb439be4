"""The receipt's honest words: pseudonymised is not anonymised, and a replay after a restore says so.
Also the receipts' own policy, checked to reach where receipts are written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from retention.errors import TerminalError
from retention.policy import PolicySet, load_policies, parse_policy
from retention.receipt import build_receipt, receipts_policy, render_markdown
from retention.results import StepResult

POLICY_DIR = Path(__file__).resolve().parents[2] / "include" / "retention_policies"


def _policy(pid: str, strategy: str) -> Any:
    doc = {
        "id": pid,
        "description": "Test data of one category.",
        "legal_basis": {"basis": "contract", "gdpr": "Art. 6(1)(b)"},
        "rationale": "Kept for the test only, then anonymised.",
        "retention": {"period": "P1Y", "counts_from": "event", "event": "made", "anchor": "made_at"},
        "records": {"table": pid, "key": "id", "subject": "customer_id"},
        "erasure_request": {"action": "erase"},
        "cap": {"max_items": 10, "max_fraction": 1.0},
        "locations": [
            {
                "store": "database",
                "table": pid,
                "action": "anonymise",
                "fields": {"name": {"strategy": strategy}},
            }
        ],
    }
    return parse_policy(yaml.safe_dump(doc), f"{pid}.yaml")


POLICIES = PolicySet(
    (_policy("people", "pseudonym"), _policy("notes", "redact")),
    {"people": "people.yaml", "notes": "notes.yaml"},
)


def _receipt(**extra: Any) -> dict[str, Any]:
    steps = [
        StepResult(
            run_id="r1",
            category=c,
            store="database",
            mode="subject",
            dry_run=False,
            anonymised=n,
            verified=True,
        )
        for c, n in (("people", 2), ("notes", 3))
    ]
    return build_receipt(
        request_ref="PR-2026-00042",
        subject_ref="psn:" + "0" * 32,
        reason="erasure_request",
        run_id="r1",
        now="2026-06-15T02:00:00+00:00",
        dry_run=False,
        policies=POLICIES,
        steps=steps,
        **extra,
    )


def test_a_category_anonymised_with_a_keyed_pseudonym_is_called_pseudonymised() -> None:
    receipt = _receipt()
    flags = {c["category"]: c["pseudonymised"] for c in receipt["categories"]}
    assert flags == {"people": True, "notes": False}
    assert receipt["totals"]["anonymised"] == 5 and receipt["totals"]["pseudonymised"] == 2
    text = render_markdown(receipt)
    assert "| 2 (pseudonymiseret) |" in text and "| 2 (pseudonymised) |" in text
    assert "| 3 |" in text
    assert "3 anonymiseret, 2 pseudonymiseret" in text and "3 anonymised, 2 pseudonymised" in text
    assert "stadig personoplysninger" in text and "still personal data" in text


def test_without_a_pseudonym_the_receipt_says_anonymised_only() -> None:
    receipt = build_receipt(
        request_ref="PR-2026-00042",
        subject_ref="psn:" + "0" * 32,
        reason="erasure_request",
        run_id="r1",
        now="2026-06-15T02:00:00+00:00",
        dry_run=False,
        policies=POLICIES,
        steps=[
            StepResult(
                run_id="r1",
                category="notes",
                store="database",
                mode="subject",
                dry_run=False,
                anonymised=3,
                verified=True,
            )
        ],
    )
    text = render_markdown(receipt)
    assert "pseudonymis" not in text.lower().replace("kundereference (pseudonymiseret)", "").replace(
        "customer reference (pseudonymised)", ""
    )
    assert "3 anonymiseret og" in text and "3 anonymised and" in text


def test_a_replay_after_restore_is_marked_in_both_languages() -> None:
    replay = {"restored_to": "2026-06-14T02:00:00+00:00", "original_run_id": "manual__first"}
    receipt = _receipt(replay=replay)
    assert receipt["replay_after_restore"] == replay
    text = render_markdown(receipt)
    assert "Gentaget efter gendannelse af en sikkerhedskopi taget 2026-06-14T02:00:00+00:00" in text
    assert "Replayed after restoring a backup taken 2026-06-14T02:00:00+00:00" in text
    assert "manual__first" in text
    assert "replay_after_restore" not in _receipt() and "Replayed" not in render_markdown(_receipt())


def test_the_shipped_receipts_policy_reaches_the_receipts_and_another_prefix_is_refused() -> None:
    shipped = load_policies(POLICY_DIR)
    found = receipts_policy(shipped, {"alleskar-privacy-receipts": "receipts-x"}, "receipts-x", "receipts/")
    assert found is not None and found.ref_column == "request_ref"
    assert found.policy.erasure_request.action == "keep_until_due"
    with pytest.raises(TerminalError, match="receipts prefix"):
        receipts_policy(shipped, {"alleskar-privacy-receipts": "receipts-x"}, "receipts-x", "proofs/")
    with pytest.raises(TerminalError, match="not mapped to the receipts bucket"):
        receipts_policy(shipped, {}, "receipts-x", "receipts/")
    assert receipts_policy(POLICIES, {}, "receipts-x", "receipts/") is None


def test_the_shipped_customer_master_data_redacts_the_name() -> None:
    customers = load_policies(POLICY_DIR).get("customer_master_data")
    strategies = {c: r.strategy for loc in customers.database_locations() for c, r in loc.fields.items()}
    assert strategies["name"] == "redact" and "pseudonym" not in strategies.values()


def test_the_receipt_names_the_year_whose_key_made_the_customer_reference() -> None:
    doc = _receipt(key_period="2026")
    assert doc["key_period"] == "2026"
    markdown = render_markdown(doc)
    assert "(nøgleår 2026)" in markdown and "(key year 2026)" in markdown
    assert "nøgleår" not in render_markdown(_receipt()), "no year when the run had none"
