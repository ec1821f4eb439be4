"""The benchmark's timer inside Airflow: how long the engine works in each task of a DAG run.

Not imported by the benchmark itself: ``bench.dag_run`` copies this file into the benchmark's own
Airflow home as ``config/airflow_local_settings.py``, which every Airflow process imports when it
imports ``airflow`` (the scheduler first; its LocalExecutor workers and their task processes are
forks of it). It changes no setting (``__all__`` is empty, so Airflow takes no name from it); it
only puts a finder in front of ``sys.meta_path`` that, when a task process first imports
``retention.flow`` (as the tasks do, inside their functions), wraps the engine's entry points:

- ``ENTRY`` (``prepare``, ``plan``, ``erase_files``, ``database_pass``, ``finish``): what a task
  asks of the engine;
- ``execute_step``: one category in one store (locate, erase, verify, ledger), as the
  benchmark's engine rows time it.

Each call appends one JSON line (function, category and store where known, run id, task id and
map index, start and end as Unix time, pid, and for a step in a file store the requests its
adapter made) to the file named by ``BENCH_TIMINGS``; nothing is recorded without it. The import
itself is not timed and not moved: the task pays it as before.

An experiment, off unless ``BENCH_PRELOAD`` names modules (comma-separated): the scheduler imports
them once it has imported its LocalExecutor, before that forks its workers, so that every task
process starts with them (what a deployment's own ``airflow_local_settings`` could do).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.abc
import importlib.machinery
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

__all__: list[str] = []
"""Airflow copies every public name of its local settings into ``airflow.settings``: none here."""

TARGET = "retention.flow"
ENTRY = ("prepare", "plan", "erase_files", "database_pass", "finish")
STEP = "execute_step"
ENV = "BENCH_TIMINGS"
PRELOAD_ENV = "BENCH_PRELOAD"
EXECUTOR = "airflow.executors.local_executor"


def _where() -> dict[str, Any]:
    """The running task's run id, task id and map index (None outside a task)."""
    try:
        from airflow.sdk import get_current_context

        ti = get_current_context()["ti"]
        index = int(ti.map_index if ti.map_index is not None else -1)
        return {"run_id": str(ti.run_id), "task": str(ti.task_id), "map_index": index}
    except Exception:  # noqa: BLE001 - a timer must never fail the task
        return {"run_id": None, "task": None, "map_index": None}


def _labels(name: str, args: Sequence[Any]) -> dict[str, Any]:
    """Category and store of a call, from its positional arguments (never a record or a key)."""
    if name == STEP and len(args) >= 2:
        return {"category": getattr(args[0], "id", None), "store": args[1]}
    if name == "erase_files" and len(args) >= 4:
        return {"category": args[2], "store": args[3]}
    if name == "plan" and len(args) >= 2:
        return {"category": args[1]}
    return {}


def _requests(name: str, args: Sequence[Any]) -> int | None:
    """The requests made so far by the adapter of a step's file store (None for the database)."""
    if name != STEP or len(args) < 3 or args[1] == "database":
        return None
    try:
        return int(getattr(args[2].adapter(args[1]), "requests", 0))
    except Exception:  # noqa: BLE001 - a timer must never fail the task
        return None


def _timed(name: str, fn: Callable[..., Any], out: str) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        before = _requests(name, args)
        started = time.time()
        try:
            return fn(*args, **kwargs)
        finally:
            line = {"fn": name, "start": started, "end": time.time(), **_where(), **_labels(name, args)}
            after = _requests(name, args)
            if before is not None and after is not None:
                line["requests"] = after - before
            line["pid"] = os.getpid()
            try:
                with open(out, "a", encoding="utf-8") as f:
                    f.write(json.dumps(line) + "\n")
            except OSError:
                pass

    return wrapper


def wrap(module: ModuleType, out: str) -> None:
    """Replace the engine's entry points and ``execute_step`` in ``retention.flow`` by timed ones."""
    for name in (*ENTRY, STEP):
        fn = getattr(module, name, None)
        if callable(fn):
            setattr(module, name, _timed(name, fn, out))


class _After(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds one module through the other finders and calls ``then(module)`` once it is executed."""

    def __init__(self, name: str, then: Callable[[ModuleType], None]) -> None:
        self._name = name
        self._then = then
        self._inner: importlib.abc.Loader | None = None

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != self._name:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                self._inner = spec.loader
                spec.loader = self
                return spec
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._inner.create_module(spec) if self._inner is not None else None

    def exec_module(self, module: ModuleType) -> None:
        if self._inner is None:
            raise ImportError(f"no loader for {self._name}")
        self._inner.exec_module(module)
        self._then(module)


def _preload(names: str) -> Callable[[ModuleType], None]:
    def load(_executor: ModuleType) -> None:
        for name in filter(None, (n.strip() for n in names.split(","))):
            # An experiment must not stop the scheduler: a module that fails to import is left out.
            with contextlib.suppress(Exception):
                importlib.import_module(name)

    return load


def install() -> None:
    """Put the finders first in ``sys.meta_path`` (once): the timer if ``BENCH_TIMINGS`` names a file,
    the preloading if ``BENCH_PRELOAD`` names modules."""
    if any(isinstance(f, _After) for f in sys.meta_path):
        return
    out = os.environ.get(ENV)
    if out:
        sys.meta_path.insert(0, _After(TARGET, lambda module: wrap(module, out)))
    preload = os.environ.get(PRELOAD_ENV)
    if preload:
        sys.meta_path.insert(0, _After(EXECUTOR, _preload(preload)))


install()
