"""The SFTP adapter's pure logic: path checks, holds, and how SFTP errors are classified (no server)."""

from __future__ import annotations

import errno
from typing import Any, cast

import paramiko
import pytest

from retention.adapters import tree
from retention.adapters.base import HoldSet
from retention.adapters.sftp import SftpAdapter, SftpItem, SftpTarget, _root
from retention.errors import TerminalError, TransientError, UnknownLocationError, UnsafeTargetError


def _target(root: str) -> SftpTarget:
    return SftpTarget(
        category="archive",
        root=root,
        path_template="{id}.txt",
        records=lambda: iter(()),
        subject_field="customer_id",
    )


class _Transport:
    def __init__(self, active: bool) -> None:
        self._active = active

    def is_active(self) -> bool:
        return self._active


class _Channel:
    def __init__(self, closed: bool) -> None:
        self.closed = closed

    def get_transport(self) -> _Transport:
        return _Transport(active=not self.closed)


class _FailingClient:
    """Answers every ``lstat`` with one exception, on a channel that is open or closed."""

    def __init__(self, exc: BaseException, *, channel_closed: bool = False) -> None:
        self._exc = exc
        self._channel = _Channel(channel_closed)

    def get_channel(self) -> _Channel:
        return self._channel

    def lstat(self, path: str) -> Any:
        raise self._exc


def _locate_with(client: _FailingClient) -> SftpAdapter:
    adapter = SftpAdapter(cast(paramiko.SFTPClient, client))
    list(adapter.locate(_target("/srv/archive")))
    return adapter


@pytest.mark.parametrize(
    ("path", "dirs"),
    [
        ("1.txt", []),
        ("a/1.txt", ["a"]),
        ("a/b/c.txt", ["a", "a/b"]),
        ("a/b/", ["a", "a/b"]),
        ("a/", ["a"]),
    ],
)
def test_every_directory_between_root_and_item_is_on_the_way(path: str, dirs: list[str]) -> None:
    assert tree.dirs_on_the_way(path) == dirs


@pytest.mark.parametrize(
    ("holds", "held"),
    [
        (HoldSet(), False),
        (HoldSet(subjects=frozenset({"c1"})), True),
        (HoldSet(subjects=frozenset({"c10"})), False),
        (HoldSet(prefixes=("docs/c1/",)), True),
        (HoldSet(prefixes=("docs/c1",)), True),
        (HoldSet(prefixes=("docs/c",)), False),
        (HoldSet(prefixes=("c1/",)), False),
    ],
)
def test_holds_match_subject_or_a_whole_path_prefix(holds: HoldSet, held: bool) -> None:
    assert tree.held(holds, SftpItem("docs/c1/1.txt", "c1")) is held


@pytest.mark.parametrize("root", ["/srv/archive", "/srv/archive/"])
def test_absolute_normalised_roots_are_accepted(root: str) -> None:
    assert _root(_target(root)) == "/srv/archive"


@pytest.mark.parametrize(
    "root", ["", "/", "//", "srv/archive", "/srv/../etc", "/srv/./archive", "/srv//archive"]
)
def test_unsafe_roots_are_refused(root: str) -> None:
    with pytest.raises(UnsafeTargetError):
        _root(_target(root))


def test_batch_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        SftpAdapter(cast(paramiko.SFTPClient, object()), batch_size=0)


@pytest.mark.parametrize(
    "exc",
    [
        EOFError(),
        paramiko.SSHException("Server connection dropped"),
        ConnectionResetError(errno.ECONNRESET, "reset"),
        BrokenPipeError(errno.EPIPE, "broken pipe"),
        TimeoutError("timed out"),
    ],
)
def test_a_lost_connection_is_transient(exc: BaseException) -> None:
    with pytest.raises(TransientError):
        _locate_with(_FailingClient(exc))


def test_a_bare_oserror_on_a_closed_channel_is_transient() -> None:
    with pytest.raises(TransientError):
        _locate_with(_FailingClient(OSError("Socket is closed"), channel_closed=True))


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (OSError(errno.EACCES, "Permission denied"), "permission_denied"),
        (OSError("Failure"), "sftp_failure"),
    ],
)
def test_an_sftp_error_status_while_looking_is_terminal(exc: OSError, code: str) -> None:
    with pytest.raises(TerminalError, match=code) as raised:
        _locate_with(_FailingClient(exc))
    assert not isinstance(raised.value, TransientError)


@pytest.mark.parametrize(
    "exc",
    [
        paramiko.AuthenticationException("denied"),
        paramiko.BadHostKeyException("127.0.0.1", paramiko.ECDSAKey.generate(), paramiko.ECDSAKey.generate()),
    ],
)
def test_refused_credentials_are_terminal(exc: BaseException) -> None:
    with pytest.raises(TerminalError) as raised:
        _locate_with(_FailingClient(exc))
    assert not isinstance(raised.value, TransientError)


def test_every_sftp_call_is_counted() -> None:
    client = _FailingClient(OSError(errno.ENOENT, "No such file"))
    adapter = SftpAdapter(cast(paramiko.SFTPClient, client))
    with pytest.raises(UnknownLocationError):
        list(adapter.locate(_target("/srv/archive")))
    assert adapter.requests == 1


class _NoCalls:
    """A client that must not be used: any attribute access fails the test."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"unexpected client use: {name}")


def test_named_renders_a_file_template_without_touching_the_client() -> None:
    rows = [{"customer_id": "c1", "id": 1}, {"customer_id": None, "id": 2}, {"customer_id": 3, "id": 3}]
    tgt = SftpTarget(
        category="archive",
        root="/srv/archive",
        path_template="docs/{id}.txt",
        records=lambda: iter([rows[:2], rows[2:]]),
        subject_field="customer_id",
    )
    adapter = SftpAdapter(cast(paramiko.SFTPClient, _NoCalls()), batch_size=2)

    batches = list(adapter.named(tgt))

    assert [list(b.items) for b in batches] == [
        [SftpItem("docs/1.txt", "c1"), SftpItem("docs/2.txt", None)],
        [SftpItem("docs/3.txt", "3")],
    ]
    assert [list(b.keys) for b in batches] == [["docs/1.txt", "docs/2.txt"], ["docs/3.txt"]]
    assert adapter.requests == 0
