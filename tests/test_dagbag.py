"""Every file in dags/ imports cleanly and defines at least one DAG, and every DAG is documented."""

from __future__ import annotations

from pathlib import Path

DAGS = Path(__file__).resolve().parent.parent / "dags"

_DOCUMENTED = """
from airflow.sdk import dag, task


@dag(schedule=None, doc_md="Says what it does.")
def documented():
    @task
    def noop() -> None:
        return None

    noop()


documented()
"""

_UNDOCUMENTED = _DOCUMENTED.replace(', doc_md="Says what it does."', "").replace("documented", "undocumented")


def dag_problems(folder: Path) -> list[str]:
    """One line per import error, ``.py`` file without a DAG and DAG without ``doc_md`` in ``folder``."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(folder))
    problems = [f"{Path(file).name}: import error: {error}" for file, error in bag.import_errors.items()]
    with_dags = {Path(dag.fileloc).resolve() for dag in bag.dags.values()}
    for path in sorted(folder.rglob("*.py")):
        if "__pycache__" not in path.parts and path.resolve() not in with_dags:
            problems.append(f"{path.name}: defines no DAG")
    for dag_id, dag in sorted(bag.dags.items()):
        if not (dag.doc_md or "").strip():
            problems.append(f"{dag_id}: doc_md is not set")
    return problems


def test_dags_folder_loads_cleanly() -> None:
    assert DAGS.is_dir(), f"{DAGS} is missing"
    assert dag_problems(DAGS) == []


def test_the_check_catches_broken_empty_and_undocumented_files(tmp_path: Path) -> None:
    (tmp_path / "documented.py").write_text(_DOCUMENTED)
    (tmp_path / "undocumented.py").write_text(_UNDOCUMENTED)
    (tmp_path / "broken.py").write_text(_DOCUMENTED.replace("def noop()", "def noop(:"))
    (tmp_path / "helpers.py").write_text("RETRIES = 3\n")

    problems = dag_problems(tmp_path)

    assert len(problems) == 4, problems
    assert problems[0].startswith("broken.py: import error: ")
    assert problems[1:] == [
        "broken.py: defines no DAG",
        "helpers.py: defines no DAG",
        "undocumented: doc_md is not set",
    ]


def doc_drift(folder: Path) -> list[str]:
    """Names in a DAG's ``doc_md`` (in backticks) that are none of its tasks, groups, params, param
    values, policy fields, reasons, run-summary fields, settings, the ledger asset or another DAG;
    and tasks its ``doc_md`` does not name."""
    import re
    from dataclasses import fields

    from airflow.dag_processing.dagbag import DagBag

    from retention.deadlines import DeadlineRule
    from retention.policy import Policy
    from retention.results import Reason, RunSummary
    from retention.watch import DeadlineReport
    from retention_airflow.clients import Settings
    from retention_airflow.tasks import LEDGER_ASSET

    problems = []
    dags = DagBag(dag_folder=str(folder)).dags
    for dag_id, dag in sorted(dags.items()):
        named = set(re.findall(r"`([a-z][a-z0-9_.]*)`", dag.doc_md or ""))
        tasks = {t.task_id for t in dag.tasks}
        known = tasks | {part for t in tasks for part in t.split(".")} | set(dag.params.keys())
        for param in dag.params.values():
            known |= {str(v) for v in (param.schema or {}).get("enum") or ()}
        known |= set(Policy.model_fields) | {LEDGER_ASSET.name} | {r.value for r in Reason}
        known |= {f.name for f in fields(RunSummary)} | {f.name for f in fields(Settings)}
        known |= set(DeadlineRule.model_fields) | {f.name for f in fields(DeadlineReport)}
        known |= set(dags)  # another DAG, named where the runbook sends the operator
        problems += [f"{dag_id}: doc_md names `{n}`, which is not in the DAG" for n in sorted(named - known)]
        problems += [
            f"{dag_id}: doc_md does not name task {t}"
            for t in sorted(tasks)
            if t not in named and t.split(".")[-1] not in named
        ]
    return problems


def test_each_dag_doc_names_its_tasks_and_nothing_that_is_not_there() -> None:
    assert doc_drift(DAGS) == []


def test_the_doc_check_catches_a_renamed_task_and_an_unnamed_one(tmp_path: Path) -> None:
    (tmp_path / "documented.py").write_text(
        _DOCUMENTED.replace('doc_md="Says what it does."', 'doc_md="Runs `noop`, then `route`."')
    )
    (tmp_path / "silent.py").write_text(_DOCUMENTED.replace("documented", "silent"))

    assert doc_drift(tmp_path) == [
        "documented: doc_md names `route`, which is not in the DAG",
        "silent: doc_md does not name task noop",
    ]


def unbounded(folder: Path) -> list[str]:
    """DAGs without a run time limit or a run alert, tasks without a time limit or alert.

    An approval (a task with ``response_timeout``) is bounded by that, and has no execution
    timeout (which would cut a human's wait short). A DAG with a required param has no run-level
    alert (``dag_defaults.dag_arguments``, ``run_alert``); its tasks alert."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk.definitions._internal.types import NOTSET

    problems = []
    for dag_id, dag in sorted(DagBag(dag_folder=str(folder)).dags.items()):
        required = any(p.value is NOTSET for p in (dag.params.get_param(k) for k in dag.params))
        if dag.dagrun_timeout is None or not (dag.on_failure_callback or required):
            problems.append(f"{dag_id}: no dagrun_timeout or no on_failure_callback")
        for t in dag.tasks:
            waits = getattr(t, "response_timeout", None)
            if waits is not None and t.execution_timeout is None:
                continue
            if t.execution_timeout is None or not t.on_failure_callback:
                problems.append(f"{dag_id}.{t.task_id}: no execution_timeout or no on_failure_callback")
            elif t.execution_timeout >= dag.dagrun_timeout:
                problems.append(f"{dag_id}.{t.task_id}: execution_timeout not shorter than the run's")
    return problems


def test_every_task_and_run_has_a_time_limit_and_an_alert() -> None:
    assert unbounded(DAGS) == []


def test_the_time_limit_check_catches_an_unbounded_task_and_run(tmp_path: Path) -> None:
    (tmp_path / "documented.py").write_text(_DOCUMENTED)
    bounded = _DOCUMENTED.replace(
        "@dag(schedule=None,",
        "@dag(schedule=None, dagrun_timeout=timedelta(hours=1), on_failure_callback=lambda c: None, "
        "default_args={'execution_timeout': timedelta(minutes=5), 'on_failure_callback': lambda c: None},",
    ).replace("documented", "bounded")
    (tmp_path / "bounded.py").write_text("from datetime import timedelta\n" + bounded)

    assert unbounded(tmp_path) == [
        "documented: no dagrun_timeout or no on_failure_callback",
        "documented.noop: no execution_timeout or no on_failure_callback",
    ]
