"""The tasks of the ``retention_housekeeping`` DAG: Airflow's own records of the per-customer DAGs,
and the pseudonym keys whose time is up.

``purge_airflow_records`` reads the window from the policies (``_airflow.yaml``: ``keep`` and
``dags``), purges Airflow's metadata database over the connection ``airflow_metadata`` and the
local task logs (``retention_airflow.housekeeping``), looks again, and writes one ledger entry
with the counts per table and of the log files: never an id, a conf or a run id of a purged run.

``destroy_pseudonym_keys`` destroys every year's pseudonym key whose ``pseudonym_keys.keep``
(``_accountability.yaml``) after the year's end has passed (``retention.keyring``), looks again, and
writes one ledger entry per destroyed year: the year, never key material.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import get_current_context, task

from retention.errors import TerminalError
from retention_airflow.tasks import LEDGER_ASSET, engine_errors

log = logging.getLogger(__name__)

ACTION = "housekeeping"
"""The ledger entry's ``action``."""


def metadata_engine() -> Any:
    """An engine on Airflow's metadata database, from the connection ``airflow_metadata``.

    Task code may not use Airflow's own session in Airflow 3 (the supervisor blocks it), so the
    deployment names the database in a connection, as for every other store.
    """
    from retention_airflow import clients
    from retention_airflow.housekeeping import METADATA_DB

    try:
        return clients.sql_engine(METADATA_DB)
    except Exception:  # noqa: BLE001 - the SDK raises different types per secrets backend
        raise TerminalError(
            f"connection {METADATA_DB} (Airflow's metadata database) is not configured"
        ) from None


def _log_folder() -> Any:
    from airflow.sdk.configuration import conf

    from retention_airflow.housekeeping import log_folder

    return log_folder(
        conf.get("logging", "base_log_folder", fallback=None),
        conf.get("logging", "log_filename_template", fallback=None),
    )


@task(outlets=[LEDGER_ASSET])
@engine_errors
def purge_airflow_records() -> dict[str, Any]:
    """Remove (or, in a dry run, count) what Airflow keeps of the per-customer DAGs' old runs."""
    from retention.ledger import Ledger, LedgerEntry
    from retention_airflow import clients
    from retention_airflow.housekeeping import MetadataPurge, window

    ctx = get_current_context()
    params = ctx["params"]
    dry_run = bool(params.get("dry_run"))
    policies = clients.policy_set()
    scope = window(policies.airflow, ctx["dag_run"].run_after, params.get("keep"))
    engine = metadata_engine()
    try:
        report = MetadataPurge(engine, scope, _log_folder()).run(dry_run=dry_run)
    finally:
        engine.dispose()
    outcome = "planned" if dry_run else ("erased" if report.verified else "verify_failed")
    ledger_db = clients.ledger_engine()
    try:
        clients.claim_run_id(ledger_db, ctx["run_id"])
        ledger = Ledger(ledger_db)
        ledger.ensure_schema()
        ledger.append(
            LedgerEntry(
                run_id=ctx["run_id"],
                action=ACTION,
                outcome=outcome,
                store="airflow",
                count=report.total,
                policy_set_hash=policies.hash,
                detail=report.detail(),
            )
        )
    finally:
        ledger_db.dispose()
    rows = " ".join(f"{table}={n}" for table, n in sorted(report.rows.items())) or "none"
    log.info(
        "SUMMARY housekeeping dry_run=%s keep=%s cutoff=%s runs=%d log_files=%d rows: %s verified=%s",
        dry_run,
        scope.keep,
        scope.cutoff.isoformat(),
        report.runs,
        report.log_files,
        rows,
        report.verified,
    )
    if report.verified is False:
        raise TerminalError("housekeeping looked again and found records left: see the ledger entry")
    return report.detail()


@task(outlets=[LEDGER_ASSET])
@engine_errors
def destroy_pseudonym_keys() -> dict[str, Any]:
    """Destroy (or, in a dry run, list) the pseudonym keys of the years whose proof retention ended."""
    from retention.keyring import Keyring, shred_expired
    from retention.ledger import Ledger
    from retention_airflow import clients

    ctx = get_current_context()
    dry_run = bool(ctx["params"].get("dry_run"))
    policies = clients.policy_set()
    keep = policies.accountability.pseudonym_keys.keep
    engine = clients.ledger_engine()
    try:
        keyring = Keyring(engine)
        keyring.ensure_schema()
        result = shred_expired(
            keyring, now=ctx["dag_run"].run_after, keep=keep, run_id=ctx["run_id"], dry_run=dry_run
        )
        entries = result.entries(ctx["run_id"], policies.hash)
        if entries:
            clients.claim_run_id(engine, ctx["run_id"])
            ledger = Ledger(engine)
            ledger.ensure_schema()
            ledger.append_many(entries)
    finally:
        engine.dispose()
    log.info(
        "SUMMARY pseudonym_keys dry_run=%s keep=%s due=%s destroyed=%s left=%s",
        dry_run,
        keep,
        ",".join(result.due) or "none",
        ",".join(result.destroyed) or "none",
        ",".join(result.left) or "none",
    )
    if result.left:
        raise TerminalError("looking again found a destroyed pseudonym key still present: see the ledger")
    return result.detail()
