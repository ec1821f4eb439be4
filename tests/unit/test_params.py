"""Trigger parameters of customer_erasure: refused by the DAG's JSON schema and again by the first task."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from retention.errors import TerminalError
from retention.params import check_erasure_params

VALID = {"customer_id": "4711", "request_ref": "PR-2026-00042", "reason": "erasure_request", "dry_run": False}

HOSTILE: list[tuple[str, Any]] = [
    ("customer_id", "1 OR 1=1"),
    ("customer_id", "1; DROP TABLE customers"),
    ("customer_id", "1' --"),
    ("customer_id", "../1"),
    ("customer_id", "../../etc/passwd"),
    ("customer_id", "*"),
    ("customer_id", "%"),
    ("customer_id", ""),
    ("customer_id", "   "),
    ("customer_id", " 1"),
    ("customer_id", "1\n"),
    ("customer_id", "1234567890123"),
    ("customer_id", "١٢٣"),
    ("customer_id", "１２３"),
    ("customer_id", "kunde@example.dk"),
    ("customer_id", "Jens Hansen"),
    ("customer_id", "-1"),
    ("customer_id", "0"),
    ("customer_id", "0123"),
    ("customer_id", "1.5"),
    ("customer_id", 4711),
    ("customer_id", ["4711"]),
    ("customer_id", {"id": "4711"}),
    ("customer_id", None),
    ("request_ref", "PR-2026-42"),
    ("request_ref", "PR-2026-00042\n"),
    ("request_ref", "../PR-2026-00042"),
    ("reason", "because"),
    ("reason", ""),
    ("dry_run", "false"),
    ("dry_run", 0),
]


def with_conf(params: Any, conf: dict[str, Any]) -> Any:
    """The DAG's params as a run with this conf would see them (a copy; the DAG is untouched)."""
    merged = copy.deepcopy(params)
    merged.update(conf)
    return merged


def _dag_params() -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(Path(__file__).resolve().parents[2] / "dags" / "customer_erasure.py"))
    return bag.dags["customer_erasure"].params


@pytest.fixture(scope="module")
def dag_params() -> Any:
    return _dag_params()


@pytest.mark.parametrize(("field", "value"), HOSTILE, ids=[f"{f}={v!r}" for f, v in HOSTILE])
def test_hostile_value_is_refused_by_the_dag_schema_and_by_the_task(
    dag_params: Any, field: str, value: Any
) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    conf = {**VALID, field: value}
    with pytest.raises(ParamValidationError):
        with_conf(dag_params, conf).validate()
    with pytest.raises(TerminalError):
        check_erasure_params(conf)


def test_missing_customer_id_is_refused(dag_params: Any) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError):
        with_conf(dag_params, {k: v for k, v in VALID.items() if k != "customer_id"}).validate()


def test_valid_values_pass_both_checks(dag_params: Any) -> None:
    for customer in ("1", "4711", "999999999999"):
        conf = {**VALID, "customer_id": customer}
        with_conf(dag_params, conf).validate()
        check_erasure_params(conf)
