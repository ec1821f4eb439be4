"""Trigger parameters of customer_erasure: refused by the DAG's JSON schema and again by the first task.

The schema (trigger form, REST API) knows only the generic id alphabet of every deployment; the
first task checks the customer id against the deployment's own format (``_subject.yaml``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from retention.errors import TerminalError
from retention.params import check_erasure_params
from retention.policy import load_policies
from retention.subject import DEFAULT_SUBJECT, SubjectFormat

K_FORMAT = load_policies(
    Path(__file__).resolve().parents[1] / "fixtures" / "k_deployment" / "policies"
).subject

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
    ("customer_id", "١٢٣"),
    ("customer_id", "１２３"),
    ("customer_id", "kunde@example.dk"),
    ("customer_id", "a@b.dk"),
    ("customer_id", "Jens Hansen"),
    ("customer_id", "-1"),
    ("customer_id", "K-00042 "),
    ("customer_id", "x" * 65),
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

FORMATS = {"default": DEFAULT_SUBJECT, "K": K_FORMAT}

FORMAT_ONLY: list[tuple[str, str]] = [
    # In the generic alphabet, so the form and the API accept them; the deployment's format does not.
    ("default", "1234567890123"),
    ("default", "0"),
    ("default", "0123"),
    ("default", "1.5"),
    ("default", "K-00042"),
    ("K", "42"),
    ("K", "4711"),
    ("K", "K-0042"),
    ("K", "k-00042"),
    ("K", "00042"),
    ("K", "K-000042"),
    ("K", "K_00042"),
]

VALID_IDS: list[tuple[str, str]] = [
    ("default", "1"),
    ("default", "4711"),
    ("default", "999999999999"),
    ("K", "K-00042"),
    ("K", "K-00000"),
    ("K", "K-99999"),
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


@pytest.mark.parametrize("subject_format", FORMATS.values(), ids=FORMATS.keys())
@pytest.mark.parametrize(("field", "value"), HOSTILE, ids=[f"{f}={v!r}" for f, v in HOSTILE])
def test_hostile_value_is_refused_by_the_dag_schema_and_by_the_task(
    dag_params: Any, field: str, value: Any, subject_format: SubjectFormat
) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    conf = {**VALID, field: value}
    with pytest.raises(ParamValidationError):
        with_conf(dag_params, conf).validate()
    with pytest.raises(TerminalError):
        check_erasure_params(conf, subject_format)


@pytest.mark.parametrize(("name", "value"), FORMAT_ONLY, ids=[f"{n}:{v}" for n, v in FORMAT_ONLY])
def test_a_generic_id_outside_the_deployment_s_format_passes_the_form_and_is_refused_by_the_task(
    dag_params: Any, name: str, value: str
) -> None:
    subject_format = FORMATS[name]
    conf = {**VALID, "customer_id": value}
    with_conf(dag_params, conf).validate()  # the form and the API cannot know the deployment's format
    with pytest.raises(TerminalError) as refused:
        check_erasure_params(conf, subject_format)
    message = str(refused.value)
    assert message.startswith(f"customer_id must be {subject_format.description}: it ")
    # The message may quote the deployment's example (configuration, not a customer), never the value.
    assert value not in message.replace(subject_format.example, "")


@pytest.mark.parametrize(("name", "value"), VALID_IDS, ids=[f"{n}:{v}" for n, v in VALID_IDS])
def test_an_id_of_the_deployment_s_format_passes_both_checks(dag_params: Any, name: str, value: str) -> None:
    conf = {**VALID, "customer_id": value}
    with_conf(dag_params, conf).validate()
    check_erasure_params(conf, FORMATS[name])


def test_each_format_refuses_the_other_s_ids() -> None:
    with pytest.raises(TerminalError, match="does not match the format"):
        check_erasure_params({**VALID, "customer_id": "K-00042"}, DEFAULT_SUBJECT)
    with pytest.raises(TerminalError, match=r"does not match the format \(e\.g\. K-00042\)"):
        check_erasure_params({**VALID, "customer_id": "4711"}, K_FORMAT)


def test_missing_customer_id_is_refused(dag_params: Any) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    conf = {k: v for k, v in VALID.items() if k != "customer_id"}
    with pytest.raises(ParamValidationError):
        with_conf(dag_params, conf).validate()
    with pytest.raises(TerminalError, match="customer_id must be .*: it is missing"):
        check_erasure_params(conf, K_FORMAT)
