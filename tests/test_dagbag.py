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
    values, policy fields, reasons, run-summary fields, settings or the ledger asset; and tasks its
    ``doc_md`` does not name."""
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
    for dag_id, dag in sorted(DagBag(dag_folder=str(folder)).dags.items()):
        named = set(re.findall(r"`([a-z][a-z0-9_.]*)`", dag.doc_md or ""))
        tasks = {t.task_id for t in dag.tasks}
        known = tasks | {part for t in tasks for part in t.split(".")} | set(dag.params.keys())
        for param in dag.params.values():
            known |= {str(v) for v in (param.schema or {}).get("enum") or ()}
        known |= set(Policy.model_fields) | {LEDGER_ASSET.name} | {r.value for r in Reason}
        known |= {f.name for f in fields(RunSummary)} | {f.name for f in fields(Settings)}
        known |= set(DeadlineRule.model_fields) | {f.name for f in fields(DeadlineReport)}
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
