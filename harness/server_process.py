"""One server process of the harness: launched in its own process group, awaited until it answers, stopped.

``ServerProcess`` is the base of the services in ``harness.services``: each runs on 127.0.0.1,
logs to a file in its own directory, and is killed with everything it started on ``stop()``,
on leaving the ``with`` block and at interpreter exit. One that cannot start raises
``RuntimeError`` naming it and quoting the tail of its log.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import NoReturn, Self, TypeVar

LOOPBACK = "127.0.0.1"
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

_LIVE: set[ServerProcess] = set()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def log_tail(path: Path, lines: int = 25) -> str:
    """Return the last ``lines`` lines of a log file, or a note that there is none."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log written)"
    return "\n".join(text.splitlines()[-lines:])


def proc_stat(pid: int | str) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (the state first); None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may contain spaces and parentheses; the fields after the last ')' are fixed.
    return text[text.rindex(")") + 2 :].split()


def _descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid``, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        fields = proc_stat(entry.name)
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _stop_all() -> None:
    for service in list(_LIVE):
        service.stop()


atexit.register(_stop_all)


class ServerProcess:
    """One server process in its own process group, logging to a file in its own directory."""

    def __init__(self, name: str, workdir: Path, port: int | None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=workdir)).resolve()
        self.log_path = self.dir / f"{name}.log"
        self.port = port or free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int:
        """The server process's pid (it leads its own process group)."""
        if self._proc is None:
            raise RuntimeError(f"{self.name} is not running")
        return self._proc.pid

    def stop(self) -> None:
        """Stop the server and everything it started; safe to call twice."""
        proc, self._proc = self._proc, None
        _LIVE.discard(self)
        if proc is not None:
            self._shutdown(proc)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _launch(self, argv: list[str], *, user: str | None = None, env: dict[str, str] | None = None) -> None:
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                user=user,
                group=user,
                extra_groups=[] if user else None,
                env=env,
            )
        _LIVE.add(self)
        self._wait_ready(self._proc)

    def _wait_ready(self, proc: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            code = proc.poll()
            if code is not None:
                self._fail(f"the process exited with code {code}")
            if self._ready():
                return
            if time.monotonic() > deadline:
                self._fail(f"no answer within {READY_TIMEOUT:.0f} s")
            time.sleep(0.05)

    def _ready(self) -> bool:
        raise NotImplementedError

    def _fail(self, reason: str) -> NoReturn:
        self.stop()
        raise RuntimeError(
            f"{self.name} did not start on {LOOPBACK}:{self.port}: {reason}. "
            f"Last lines of {self.log_path}:\n{log_tail(self.log_path)}"
        )

    def _shutdown(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.returncode is not None:
            return  # already reaped: its pid may belong to someone else by now
        # Children that called setsid() (sshd sessions, PostgreSQL backends) escape killpg, so they are
        # looked up while the group is frozen and cannot fork any more.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGSTOP)
        stragglers = _descendants(proc.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in stragglers:
            _kill(pid)
        proc.wait(STOP_TIMEOUT)


_S = TypeVar("_S", bound=ServerProcess)


def started(server: _S, start: Callable[[], None]) -> _S:
    """``server`` once ``start()`` returned; stopped again (and the error raised) if it did not."""
    try:
        start()
    except BaseException:
        server.stop()
        raise
    return server
