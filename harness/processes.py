"""The processes the demo starts: records that survive a pid's reuse, stopping them, the state file.

``.demo/state.json`` names every process the demo started (pid and start time, so a pid
reused by another program is never signalled); ``stop_demo`` (``python -m harness.demo stop``)
ends them from another process.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.demo_config import DEMO_DIR, DemoError
from harness.server_process import proc_stat

MARKER = ".alleskar-demo"
"""A file in the demo directory: only a directory holding it is ever emptied."""
STATE = "state.json"
STOP_TIMEOUT = 30.0
"""Seconds between SIGTERM and SIGKILL."""


def prepare_demo_dir(path: Path) -> Path:
    """Empty ``path`` (only if it is a demo directory or empty) and mark it as the demo's; return it."""
    if path.exists():
        if not path.is_dir():
            raise DemoError(f"{path} exists and is not a directory; remove it first")
        if any(path.iterdir()) and not (path / MARKER).exists():
            raise DemoError(f"{path} is not empty and was not made by the demo; remove it first")
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / MARKER).write_text("made by python -m harness.demo; emptied by the next start\n")
    return path


def process_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (from /proc); None if it is gone or a zombie."""
    fields = proc_stat(pid)
    return None if fields is None or fields[0] in ("Z", "X") else int(fields[19])


@dataclass(frozen=True)
class ProcessRecord:
    """A process the demo started: name, pid, start time; ``group`` if it leads its own process group."""

    name: str
    pid: int
    start_time: int
    group: bool = True

    @classmethod
    def of(cls, name: str, pid: int, *, group: bool = True) -> ProcessRecord:
        """Record a running process (its start time is read now)."""
        start = process_start_time(pid)
        if start is None:
            raise DemoError(f"{name} (pid {pid}) exited at once")
        return cls(name, pid, start, group)

    def alive(self) -> bool:
        """Whether this very process still runs (not another one that reuses the pid)."""
        return process_start_time(self.pid) == self.start_time

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the process (to its group if it leads one), if it is still this process."""
        if not self.alive():
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if self.group and os.getpgid(self.pid) == self.pid:
                os.killpg(self.pid, sig)
            else:
                os.kill(self.pid, sig)


def terminate(records: Sequence[ProcessRecord], timeout: float = STOP_TIMEOUT) -> list[str]:
    """SIGTERM the processes, wait up to ``timeout`` s, SIGKILL what is left; return the names killed hard."""
    for record in records:
        record.signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(r.alive() for r in records) and time.monotonic() < deadline:
        time.sleep(0.2)
    hard = [r.name for r in records if r.alive()]
    for record in records:
        record.signal(signal.SIGKILL)
    return hard


@dataclass
class State:
    """What ``stop`` and ``status`` need to know about a demo (``.demo/state.json``)."""

    main: ProcessRecord | None = None
    processes: list[ProcessRecord] = field(default_factory=list)
    postgres_cluster: str | None = None
    url: str | None = None
    phase: str = "starting"

    def save(self, demo_dir: Path) -> None:
        """Write the state atomically."""
        data = {
            "main": None if self.main is None else vars(self.main),
            "processes": [vars(p) for p in self.processes],
            "postgres_cluster": self.postgres_cluster,
            "url": self.url,
            "phase": self.phase,
        }
        tmp = demo_dir / f"{STATE}.tmp"
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(demo_dir / STATE)

    @classmethod
    def load(cls, demo_dir: Path) -> State | None:
        """The saved state, or None if there is none (or it is unreadable)."""
        try:
            data = json.loads((demo_dir / STATE).read_text())
            return cls(
                main=None if data["main"] is None else ProcessRecord(**data["main"]),
                processes=[ProcessRecord(**p) for p in data["processes"]],
                postgres_cluster=data.get("postgres_cluster"),
                url=data.get("url"),
                phase=data.get("phase", "?"),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None


def stop_demo(demo_dir: Path = DEMO_DIR, timeout: float = 60.0) -> bool:
    """Stop a running demo: ask its main process, then end whatever it left; True if anything ran."""
    state = State.load(demo_dir)
    if state is None:
        return False
    ran = False
    main = state.main
    if main is not None and main.pid != os.getpid() and main.alive():
        ran = True
        main.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while main.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
    leftovers = [p for p in state.processes if p.alive()]
    if leftovers:
        ran = True
        terminate(leftovers, timeout=10.0)
    _remove_cluster(state.postgres_cluster)
    return ran


def _remove_cluster(path: str | None) -> None:
    # Only the harness's own temp cluster directories, whatever the state file says.
    if not path:
        return
    cluster = Path(path)
    if cluster.parent == Path(tempfile.gettempdir()) and cluster.name.startswith("alleskar-pg-"):
        shutil.rmtree(cluster, ignore_errors=True)
