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
