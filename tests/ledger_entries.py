"""Ledger entries the tests write as earlier runs would have left them."""

from __future__ import annotations

from retention.ledger import POLICY_SET, LedgerEntry


def policy_set_approved(policy_set_hash: str, run_id: str = "scheduled__earlier") -> LedgerEntry:
    """An earlier run's approval that put ``policy_set_hash`` in force (``flow.record_policy_set``)."""
    return LedgerEntry(
        run_id=run_id,
        store="*",
        location="*",
        action=POLICY_SET,
        outcome="approved",
        count=0,
        policy_set_hash=policy_set_hash,
    )
