"""Airflow's own records of the per-customer DAGs, purged after a window (``retention_housekeeping``).

Every run of ``customer_erasure`` and ``customer_access_report`` leaves the customer id in
Airflow's metadata database: in the run's ``conf``, in the event log (refused triggers too,
whose rows have no run), in XCom, rendered fields and task logs. ``_airflow.yaml`` beside the
policies says how long Airflow keeps them (``AirflowMetadata``: ``keep`` after a run's end, and
the ``dags``); this module removes what is older, without archive tables, and counts what it did.

What goes, per table (the run = a finished run of one of the DAGs that ended before the cutoff):

- ``dag_run`` (its ``conf``) and everything hanging off it, children first, so that the purge
  does not depend on the database cascading (SQLite enforces foreign keys only when asked):
  ``hitl_detail_history``, ``hitl_detail`` (a human's answer and the form's params),
  ``task_instance_note``, ``task_reschedule``, ``xcom``, ``rendered_task_instance_fields``,
  ``task_map`` (mapped values), ``task_instance_history``, ``task_instance``
  (``rendered_map_index``, ``next_kwargs``), ``task_state_store``, ``deadline``,
  ``dag_run_note``, ``dagrun_asset_event``, ``asset_partition_dag_run``; then the ``callback``
  rows of the run's deadlines (their ``data`` may hold the run's context) and the ``trigger``
  rows of its task instances (``kwargs``), each only when nothing else refers to it.
- ``backfill_dag_run.dag_run_id`` is set to NULL (the backfill's own row stays), as the
  database would; ``asset_event.extra`` of events the run emitted is emptied (the event stays:
  runs of other DAGs were triggered by it and name it).
- ``log`` (the event log): rows of those DAGs older than the cutoff, unless they belong to a run
  that stays (still running, or within the window); and rows without a DAG (or with ``~``, the
  API's "every DAG") whose ``extra`` names one of them, e.g. a bulk request's body.
- ``_airflow_deleted__*`` (what ``airflow db clean`` archives unless told not to): every row of
  those DAGs, by ``dag_id`` or ``source_dag_id``. Nothing is archived here.
- Task log files: ``<base_log_folder>/dag_id=<dag>/run_id=<run>/`` of each purged run, and of
  any run that no longer exists whose files are all older than the cutoff (left by a purge that
  stopped half-way, or a run deleted by hand). Symbolic links are removed, never followed.

Runs that are queued or running, and runs of any other DAG, are never touched. Airflow 3 does
not let task code use its ORM session (``block_orm_access`` in the task supervisor), so the
purge runs over an engine of its own on the connection ``airflow_metadata`` to the metadata
database, with the tables of Airflow's own models. ``MetadataPurge`` takes that engine and
plain values; the task in ``housekeeping_tasks`` wires it to the connections and the ledger.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from retention.clock import local_naive, shift, to_utc_earliest
from retention.errors import TerminalError
from retention.policy import AirflowMetadata, Period

METADATA_DB = "airflow_metadata"
"""The connection to Airflow's metadata database (the same database Airflow uses)."""

FINISHED = ("success", "failed")
"""The run states that may be purged; anything else (queued, running) stays."""

RUN_BATCH = 200
"""Runs purged per transaction: short transactions next to a working scheduler."""

LOG_BATCH = 1000
"""Event-log rows deleted per transaction."""

ARCHIVE_PREFIX = "_airflow_deleted__"
"""What ``airflow db clean`` names its archive tables."""

ARCHIVE_DAG_COLUMNS = ("dag_id", "source_dag_id")

LOG_LAYOUT = "dag_id={{ ti.dag_id }}/run_id={{ ti.run_id }}/"
"""How the task log paths must begin (Airflow's default ``log_filename_template``)."""

ZERO = "P0D"
"""A window of zero: every finished run (only as a run's ``keep`` param, never as the policy)."""


# -- the window -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """Which records go: of ``dags``, what ended before ``cutoff`` (UTC)."""

    dags: tuple[str, ...]
    cutoff: datetime
    keep: str
    """The period the cutoff was computed with (the policy's, or a shorter one for this run)."""


def _before(now: datetime, keep: str) -> datetime:
    if keep == ZERO:
        return now
    # The earliest instant the Copenhagen wall-clock bound can mean: errs on the side of keeping.
    return to_utc_earliest(shift(local_naive(now), Period.parse(keep), -1))


def window(policy: AirflowMetadata, now: datetime, keep: str | None = None) -> Window:
    """The window at ``now``: the policy's ``keep``, or ``keep`` of this run if that purges more.

    A run's ``keep`` may only shorten the window (``P0D``: every finished run); a longer one is
    ignored, because the policy is the promise.
    """
    if now.tzinfo is None:
        raise TerminalError("the housekeeping clock must be timezone-aware")
    cutoff, used = _before(now, policy.keep), policy.keep
    if keep:
        if not (keep == ZERO or _is_period(keep)):
            raise TerminalError("keep must be an ISO-8601 period such as P7D, or P0D")
        if _before(now, keep) > cutoff:
            cutoff, used = _before(now, keep), keep
    return Window(dags=tuple(policy.dags), cutoff=cutoff, keep=used)


def _is_period(text: str) -> bool:
    try:
        Period.parse(text)
    except ValueError:
        return False
    return True


# -- the report -----------------------------------------------------------------------------------


@dataclass
class PurgeReport:
    """What one purge found (a dry run) or removed: counts only, never an id."""

    window: Window
    dry_run: bool
    runs: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    """Table -> rows deleted (or emptied, for ``asset_event`` and ``backfill_dag_run``)."""
    log_dirs: int = 0
    log_files: int = 0
    verified: bool | None = None
    """After a real purge: whether looking again found nothing left (None in a dry run)."""
    left: dict[str, int] = field(default_factory=dict)
    """What looking again still found (runs, rows per table, log files)."""

    def add(self, label: str, n: int) -> None:
        if n:
            self.rows[label] = self.rows.get(label, 0) + n

    @property
    def total(self) -> int:
        return sum(self.rows.values()) + self.log_files

    def detail(self) -> dict[str, Any]:
        """The ledger entry's detail and the task's return value."""
        return {
            "dags": list(self.window.dags),
            "keep": self.window.keep,
            "cutoff": self.window.cutoff.isoformat(),
            "dry_run": self.dry_run,
            "runs": self.runs,
            "rows": dict(sorted(self.rows.items())),
            "log_dirs": self.log_dirs,
            "log_files": self.log_files,
            "verified": self.verified,
            **({"left": dict(sorted(self.left.items()))} if self.left else {}),
        }

    def leftovers(self) -> dict[str, int]:
        """What a count after the purge still found (empty when verified)."""
        left = dict(self.rows)
        if self.runs:
            left["runs"] = self.runs
        if self.log_files or self.log_dirs:
            left["log_files"] = self.log_files + self.log_dirs
        return left


# -- Airflow's tables -----------------------------------------------------------------------------


def _table(model: Any) -> sa.Table:
    return cast(sa.Table, model.__table__)


@dataclass(frozen=True)
class _Tables:
    """The tables of Airflow's own models (imported here: parsing a DAG file stays cheap)."""

    dag_run: sa.Table
    ti: sa.Table
    tih: sa.Table
    trigger: sa.Table
    callback: sa.Table
    deadline: sa.Table
    log: sa.Table
    asset_event: sa.Table
    asset_watcher: sa.Table
    backfill_dag_run: sa.Table
    by_run: tuple[sa.Table, ...]
    """Keyed by ``dag_id`` and ``run_id``, children before parents."""
    by_ti: tuple[tuple[sa.Table, str], ...]
    """Keyed by a task instance's ``id``."""
    by_run_pk: tuple[tuple[sa.Table, str], ...]
    """Keyed by the run's primary key, ``dag_run`` last."""
    hitl_history: sa.Table

    @classmethod
    def load(cls) -> _Tables:
        from airflow.models.asset import AssetEvent, AssetPartitionDagRun, AssetWatcherModel
        from airflow.models.asset import association_table as dagrun_asset_event
        from airflow.models.backfill import BackfillDagRun
        from airflow.models.callback import Callback
        from airflow.models.dagrun import DagRun, DagRunNote
        from airflow.models.deadline import Deadline
        from airflow.models.hitl import HITLDetail
        from airflow.models.hitl_history import HITLDetailHistory
        from airflow.models.log import Log
        from airflow.models.renderedtifields import RenderedTaskInstanceFields
        from airflow.models.task_state_store import TaskStateStoreModel
        from airflow.models.taskinstance import TaskInstance, TaskInstanceNote
        from airflow.models.taskinstancehistory import TaskInstanceHistory
        from airflow.models.taskmap import TaskMap
        from airflow.models.taskreschedule import TaskReschedule
        from airflow.models.trigger import Trigger
        from airflow.models.xcom import XComModel

        ti, tih = _table(TaskInstance), _table(TaskInstanceHistory)
        return cls(
            dag_run=_table(DagRun),
            ti=ti,
            tih=tih,
            trigger=_table(Trigger),
            callback=_table(Callback),
            deadline=_table(Deadline),
            log=_table(Log),
            asset_event=_table(AssetEvent),
            asset_watcher=_table(AssetWatcherModel),
            backfill_dag_run=_table(BackfillDagRun),
            by_run=tuple(_table(m) for m in (XComModel, RenderedTaskInstanceFields, TaskMap)) + (tih, ti),
            by_ti=((_table(HITLDetail), "ti_id"), (_table(TaskInstanceNote), "ti_id"))
            + ((_table(TaskReschedule), "ti_id"),),
            by_run_pk=(
                (_table(TaskStateStoreModel), "dag_run_id"),
                (_table(Deadline), "dagrun_id"),
                (_table(DagRunNote), "dag_run_id"),
                (dagrun_asset_event, "dag_run_id"),
                (_table(AssetPartitionDagRun), "created_dag_run_id"),
            ),
            hitl_history=_table(HITLDetailHistory),
        )


@dataclass(frozen=True)
class _Batch:
    """Some old runs of one DAG."""

    dag_id: str
    pks: list[int]
    run_ids: list[str]

    def of(self, table: sa.Table) -> sa.ColumnElement[bool]:
        return sa.and_(table.c.dag_id == self.dag_id, table.c.run_id.in_(self.run_ids))


class MetadataPurge:
    """Count (``dry_run``) or remove the records of ``window`` in the metadata DB of ``engine``
    and the task logs under ``log_folder`` (None: no local task logs)."""

    def __init__(self, engine: Engine, window: Window, log_folder: Path | None) -> None:
        self._engine = engine
        self._window = window
        self._log_folder = log_folder
        self._t = _Tables.load()

    def run(self, *, dry_run: bool) -> PurgeReport:
        """Purge (or only count); after a real purge, count again and say whether anything is left."""
        report = self._pass(dry_run=dry_run)
        if not dry_run:
            report.left = self._pass(dry_run=True).leftovers()
            report.verified = not report.left
        return report

    # -- one pass ----------------------------------------------------------------------------------

    def _pass(self, *, dry_run: bool) -> PurgeReport:
        report = PurgeReport(self._window, dry_run)
        runs = {dag: self._old_runs(dag) for dag in self._window.dags}
        report.runs = sum(len(r) for r in runs.values())
        # Files first: if the database part stops half-way, the next run still knows the runs.
        if self._log_folder is not None:
            for dag, old in runs.items():
                self._log_files(report, dag, {run_id for _pk, run_id in old}, dry_run)
        for dag, old in runs.items():
            for chunk in _chunks(old, RUN_BATCH):
                with self._engine.begin() as conn:
                    batch = self._still_old(conn, dag, [pk for pk, _ in chunk], lock=not dry_run)
                    if batch.pks:
                        self._runs(conn, report, batch, dry_run)
        self._event_log(report, dry_run)
        with self._engine.begin() as conn:
            self._archives(conn, report, dry_run)
        return report

    def _old(self) -> Callable[[sa.Table], sa.ColumnElement[bool]]:
        cutoff = self._window.cutoff

        def old(dr: sa.Table) -> sa.ColumnElement[bool]:
            ended = sa.or_(dr.c.end_date < cutoff, sa.and_(dr.c.end_date.is_(None), dr.c.run_after < cutoff))
            return sa.and_(dr.c.state.in_(FINISHED), ended)

        return old

    def _old_runs(self, dag_id: str) -> list[tuple[int, str]]:
        dr = self._t.dag_run
        query = (
            sa.select(dr.c.id, dr.c.run_id).where(dr.c.dag_id == dag_id, self._old()(dr)).order_by(dr.c.id)
        )
        with self._engine.connect() as conn:
            return [(int(pk), str(run_id)) for pk, run_id in conn.execute(query)]

    def _still_old(self, conn: Connection, dag_id: str, pks: list[int], *, lock: bool) -> _Batch:
        """The runs of ``pks`` that are still finished and old, locked until the transaction ends (a
        run cleared in the UI meanwhile is queued again, and stays)."""
        dr = self._t.dag_run
        query = sa.select(dr.c.id, dr.c.run_id).where(dr.c.id.in_(pks), self._old()(dr)).order_by(dr.c.id)
        if lock and conn.dialect.name != "sqlite":  # SQLite: one writer at a time anyway
            query = query.with_for_update()
        rows = conn.execute(query).all()
        return _Batch(dag_id, [int(pk) for pk, _ in rows], [str(run_id) for _, run_id in rows])

    def _kept_runs(self, dag_id: str) -> set[str]:
        dr = self._t.dag_run
        query = sa.select(dr.c.run_id).where(dr.c.dag_id == dag_id, sa.not_(self._old()(dr)))
        with self._engine.connect() as conn:
            return {str(r) for r in conn.execute(query).scalars()}

    # -- the runs' rows ----------------------------------------------------------------------------

    def _runs(self, conn: Connection, report: PurgeReport, batch: _Batch, dry_run: bool) -> None:
        t = self._t
        triggers = _ids(
            conn, sa.select(t.ti.c.trigger_id).where(batch.of(t.ti), t.ti.c.trigger_id.is_not(None))
        )
        callbacks = _ids(
            conn,
            sa.select(t.deadline.c.callback_id).where(
                t.deadline.c.dagrun_id.in_(batch.pks), t.deadline.c.callback_id.is_not(None)
            ),
        )
        history = sa.select(t.tih.c.task_instance_id).where(batch.of(t.tih))
        _rows(conn, report, t.hitl_history, t.hitl_history.c.ti_history_id.in_(history), dry_run)
        instances = sa.select(t.ti.c.id).where(batch.of(t.ti))
        for table, column in t.by_ti:
            _rows(conn, report, table, table.c[column].in_(instances), dry_run)
        for table in t.by_run:
            _rows(conn, report, table, batch.of(table), dry_run)
        self._unlink(conn, report, batch, dry_run)
        for table, column in (*t.by_run_pk, (t.dag_run, "id")):
            _rows(conn, report, table, table.c[column].in_(batch.pks), dry_run)
        _rows(conn, report, t.callback, self._unused_callbacks(callbacks, batch), dry_run)
        _rows(conn, report, t.trigger, self._unused_triggers(triggers, batch), dry_run)

    def _unlink(self, conn: Connection, report: PurgeReport, batch: _Batch, dry_run: bool) -> None:
        """Rows that stay but name the run: a backfill's link to it, the extra of its asset events."""
        t = self._t
        link = t.backfill_dag_run.c.dag_run_id.in_(batch.pks)
        _update(conn, report, t.backfill_dag_run, link, {"dag_run_id": None}, dry_run)
        ev = t.asset_event
        emitted = sa.and_(ev.c.source_dag_id == batch.dag_id, ev.c.source_run_id.in_(batch.run_ids))
        # json has no equality on PostgreSQL: compare the text Airflow wrote
        extra = sa.cast(ev.c.extra, sa.Text)
        filled = sa.and_(emitted, ev.c.extra.is_not(None), extra.not_in(["{}", "null"]))
        _update(conn, report, ev, filled, {"extra": {}}, dry_run)

    def _unused_callbacks(self, ids: list[Any], batch: _Batch) -> sa.ColumnElement[bool]:
        t = self._t
        d = t.deadline
        other = sa.select(d.c.id).where(d.c.callback_id == t.callback.c.id, d.c.dagrun_id.not_in(batch.pks))
        return sa.and_(t.callback.c.id.in_(ids), ~other.exists())

    def _unused_triggers(self, ids: list[Any], batch: _Batch) -> sa.ColumnElement[bool]:
        t = self._t
        trigger_id = t.trigger.c.id
        others = [
            sa.select(t.ti.c.id).where(t.ti.c.trigger_id == trigger_id, sa.not_(batch.of(t.ti))),
            sa.select(t.asset_watcher.c.asset_id).where(t.asset_watcher.c.trigger_id == trigger_id),
            sa.select(t.callback.c.id).where(t.callback.c.trigger_id == trigger_id),
        ]
        return sa.and_(trigger_id.in_(ids), *(~q.exists() for q in others))

    # -- the event log -----------------------------------------------------------------------------

    def _event_log_rows(self) -> sa.ColumnElement[bool]:
        log, dr, dags = self._t.log, self._t.dag_run, self._window.dags
        kept_run = sa.select(dr.c.id).where(
            dr.c.dag_id == log.c.dag_id, dr.c.run_id == log.c.run_id, sa.not_(self._old()(dr))
        )
        of_dags = sa.and_(log.c.dag_id.in_(dags), ~kept_run.exists())
        no_dag = sa.or_(log.c.dag_id.is_(None), log.c.dag_id == "~")
        naming = sa.or_(*(log.c.extra.contains(f'"{dag}"', autoescape=True) for dag in dags))
        return sa.and_(log.c.dttm < self._window.cutoff, sa.or_(of_dags, sa.and_(no_dag, naming)))

    def _event_log(self, report: PurgeReport, dry_run: bool) -> None:
        log = self._t.log
        if not self._window.dags:
            return
        where = self._event_log_rows()
        if dry_run:
            with self._engine.connect() as conn:
                _rows(conn, report, log, where, dry_run=True)
            return
        while True:
            with self._engine.begin() as conn:
                ids = _ids(conn, sa.select(log.c.id).where(where).order_by(log.c.id).limit(LOG_BATCH))
                if not ids:
                    return
                _rows(conn, report, log, log.c.id.in_(ids), dry_run=False)

    # -- archive tables ----------------------------------------------------------------------------

    def _archives(self, conn: Connection, report: PurgeReport, dry_run: bool) -> None:
        inspector = sa.inspect(conn)
        for name in inspector.get_table_names():
            if not name.startswith(ARCHIVE_PREFIX):
                continue
            columns = {c["name"] for c in inspector.get_columns(name)}
            column = next((c for c in ARCHIVE_DAG_COLUMNS if c in columns), None)
            if column is None:
                continue  # no DAG to tell the rows apart (jobs, triggers): not the DAGs' records
            table = sa.table(name, sa.column(column))
            where = table.c[column].in_(self._window.dags)
            # one label for all: the archive's name carries a timestamp
            if dry_run:
                n = conn.execute(sa.select(sa.func.count()).select_from(table).where(where)).scalar_one()
            else:
                n = conn.execute(sa.delete(table).where(where)).rowcount
            report.add("archive_tables", int(n))

    # -- task log files ----------------------------------------------------------------------------

    def _log_files(self, report: PurgeReport, dag_id: str, purged: set[str], dry_run: bool) -> None:
        assert self._log_folder is not None  # noqa: S101 - checked by the caller
        folder = self._log_folder / f"dag_id={dag_id}"
        if not _real_directory(folder):
            return
        kept = self._kept_runs(dag_id)
        cutoff = self._window.cutoff.timestamp()
        with os.scandir(folder) as entries:
            targets = [
                Path(e.path)
                for e in entries
                if e.name.startswith("run_id=")
                and e.name[len("run_id=") :] not in kept
                and (e.name[len("run_id=") :] in purged or _newest(Path(e.path)) < cutoff)
            ]
        for target in sorted(targets):
            files = _files(target)
            if not dry_run:
                _remove(target)
            report.log_dirs += 1
            report.log_files += files


def log_folder(base: str | None, template: str | None) -> Path | None:
    """The local task-log folder to purge, from ``[logging] base_log_folder`` and
    ``log_filename_template``; TerminalError when the files cannot be found by run."""
    if not base:
        return None
    if not (template or "").replace(" ", "").startswith(LOG_LAYOUT.replace(" ", "")):
        raise TerminalError(
            "[logging] log_filename_template does not begin with dag_id=.../run_id=...: "
            "housekeeping cannot find a run's task logs; restore the default layout"
        )
    path = Path(base)
    if not path.is_absolute():
        raise TerminalError("[logging] base_log_folder must be an absolute path")
    return path


# -- helpers --------------------------------------------------------------------------------------


def _chunks(items: Sequence[tuple[int, str]], n: int) -> Iterator[Sequence[tuple[int, str]]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _ids(conn: Connection, query: sa.Select[Any]) -> list[Any]:
    return sorted({row[0] for row in conn.execute(query)}, key=str)


def _rows(conn: Connection, report: PurgeReport, table: sa.Table, where: Any, dry_run: bool) -> None:
    if dry_run:
        n = conn.execute(sa.select(sa.func.count()).select_from(table).where(where)).scalar_one()
    else:
        n = conn.execute(sa.delete(table).where(where)).rowcount
    report.add(table.name, int(n))


def _update(
    conn: Connection, report: PurgeReport, table: sa.Table, where: Any, values: dict[str, Any], dry_run: bool
) -> None:
    if dry_run:
        n = conn.execute(sa.select(sa.func.count()).select_from(table).where(where)).scalar_one()
    else:
        n = conn.execute(sa.update(table).where(where).values(**values)).rowcount
    report.add(table.name, int(n))


def _real_directory(path: Path) -> bool:
    """Whether ``path`` is a directory that is not a link; TerminalError for a link (never followed)."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(mode):
        raise TerminalError(f"{path.name} in the task-log folder is a symbolic link: not followed")
    return stat.S_ISDIR(mode)


def _walk(path: Path) -> Iterable[Path]:
    """Every entry under ``path`` (itself included), links not followed."""
    yield path
    if path.is_symlink() or not path.is_dir():
        return
    for root, dirs, files in os.walk(path, followlinks=False):
        for name in dirs + files:
            yield Path(root) / name


def _newest(path: Path) -> float:
    return max((p.lstat().st_mtime for p in _walk(path)), default=0.0)


def _files(path: Path) -> int:
    return sum(1 for p in _walk(path) if p.is_symlink() or not p.is_dir())


def _remove(path: Path) -> None:
    """Remove a run's log directory; a link is removed itself, its target is left alone."""
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
        return
    if not shutil.rmtree.avoids_symlink_attacks:  # pragma: no cover - true on Linux
        raise TerminalError("this platform cannot remove a directory without following links")
    shutil.rmtree(path)
