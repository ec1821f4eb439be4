"""The demo's shared vocabulary: where it lives, the names it gives buckets, DAGs and the admin, its error.

Everything the demo's modules (``harness.processes``, ``harness.demo_stores``,
``harness.airflow_setup``, ``harness.airflow_api``, ``harness.demo_summary``, ``harness.demo``)
agree on, and nothing that does work beyond reading the shipped policies.
"""

from __future__ import annotations

import functools
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEMO_DIR = REPO / ".demo"

DOCUMENTS_BUCKET = "alleskar-documents"
RECEIPTS_BUCKET = "alleskar-privacy-receipts"
NIGHTLY = "retention_nightly"
ERASURE = "customer_erasure"
SWEEP = "retention_sweep"
ADMIN = "admin"


class DemoError(RuntimeError):
    """A step of the demo failed; the message says which and where its log is."""


def say(message: str) -> None:
    """Print one line of progress at once (output is often piped through make)."""
    print(message, flush=True)


@functools.cache
def policy_stores() -> dict[str, list[str]]:
    """Category -> its stores, in policy order (from the shipped policies)."""
    from retention.policy import load_policies
    from retention_airflow.clients import DEFAULT_POLICY_DIR

    return {p.id: list(p.stores()) for p in load_policies(DEFAULT_POLICY_DIR).policies}
