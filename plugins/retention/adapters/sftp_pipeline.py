"""Pipelined SFTP requests: many ``lstat``, ``remove`` or ``rmdir`` sent before their answers are read.

paramiko's public methods send one request and wait for its answer, so every file costs a
round trip. SFTP numbers its requests, so a client may send many and match the answers as
they come. ``Pipeline`` does that on a paramiko ``SFTPClient`` (at most ``in_flight`` requests
at a time) and calls any other client one request at a time through its public methods, with
the same answers either way.

paramiko has no public API for this, so ``Pipeline`` relies on these private members of
paramiko, checked against **paramiko 5.1.0** (``CHECKED_AGAINST``; the version pinned in
requirements.txt). ``tests/unit/test_sftp_pipeline_api.py`` (signatures, constants, status
and attribute decoding) and ``tests/integration/test_sftp_pipeline_contract.py`` (the behaviour
against a real OpenSSH server) fail, naming the member, when an upgrade changes one of them:

- ``SFTPClient._async_request(fileobj, t, *args) -> int``: sends request type ``t`` with ``args``
  (``bytes`` go out as SSH strings), registers ``fileobj`` as the receiver of its answer and
  returns the request's number.
- ``SFTPClient._read_response(waitfor=None)``: with no argument, reads one answer and hands it to
  its receiver as ``fileobj._async_response(t, msg, num)`` (the callback paramiko's own
  ``SFTPFile`` implements for its prefetch); a lost connection raises ``SSHException``.
- ``SFTPClient._adjust_cwd(path) -> bytes``: the path relative to ``chdir()``, as the public
  methods send it.
- ``SFTPClient._convert_status(msg)``: returns for ``SSH_FX_OK``, raises ``OSError`` with
  ``errno.ENOENT`` (no such file), ``errno.EACCES`` (permission denied) or no errno (any other
  failure), ``EOFError`` for ``SSH_FX_EOF``.
- ``SFTPAttributes._from_msg(msg)`` (a classmethod): decodes an ``SSH_FXP_ATTRS`` answer.
- ``BaseSFTP._write_all(out)``: writes one encoded packet to the channel (``_send_packet`` calls
  it once per request). During a burst it is shadowed on the instance to collect the packets,
  which then go out in one write: the channel cuts them into as few SSH packets as its window
  allows, instead of one encrypted SSH packet (and one socket send) per request.
- ``BaseSFTP._read_all(n)``: reads exactly ``n`` bytes (``_read_packet`` calls it twice per
  answer). During a burst it is shadowed to serve those reads from large channel reads; the
  answers of a burst are all the server sends, so nothing is read past them (checked).
- ``paramiko.sftp.CMD_LSTAT`` (7), ``CMD_REMOVE`` (13), ``CMD_RMDIR`` (15), ``CMD_STATUS`` (101),
  ``CMD_ATTRS`` (105): SFTP v3's packet types, from a module paramiko does not document.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, ParamSpec, Protocol, TypeAlias, TypeVar

import paramiko
from paramiko.sftp import CMD_ATTRS, CMD_LSTAT, CMD_REMOVE, CMD_RMDIR, CMD_STATUS

__all__ = ["CHECKED_AGAINST", "Answer", "Op", "Pipeline", "RoundTrip"]

CHECKED_AGAINST = "5.1.0"
"""The paramiko version whose private members above were checked (tests compare it with the pin)."""

P = ParamSpec("P")
R = TypeVar("R")

Op: TypeAlias = Literal["lstat", "remove", "rmdir"]
Answer: TypeAlias = paramiko.SFTPAttributes | None | OSError
"""Per path: its attributes (``lstat``), None (``remove``/``rmdir`` done) or the status's ``OSError``."""

_READ_SIZE = 65536
"""Bytes asked of the channel per read while answers are read (it returns what it has)."""

_COMMANDS: dict[Op, int] = {"lstat": CMD_LSTAT, "remove": CMD_REMOVE, "rmdir": CMD_RMDIR}


class RoundTrip(Protocol):
    """Makes one round trip of ``requests`` SFTP requests: ``send(*args)``, its result or its exception.

    A caller passes its own to count requests and classify what the client raises.
    """

    def __call__(self, requests: int, send: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R: ...


def _direct(requests: int, send: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """The plain round trip: ``send(*args)``."""
    return send(*args, **kwargs)


class Pipeline:
    """One SFTP operation on many paths, pipelined on a paramiko ``SFTPClient``.

    ``many`` answers every path in order; an error status is that path's answer (an ``OSError``),
    while whatever the client or ``round_trip`` raises otherwise (a lost connection) ends the call.
    A paramiko client gets bursts of at most ``in_flight`` requests, each burst one round trip
    (all requests sent, then all answers read); any other client, one round trip per path through
    its public ``lstat``, ``remove`` and ``rmdir``.
    """

    def __init__(
        self, client: paramiko.SFTPClient, *, in_flight: int = 1000, round_trip: RoundTrip = _direct
    ) -> None:
        if in_flight < 1:
            raise ValueError("in_flight must be at least 1")
        self._client = client
        self._in_flight = in_flight
        self._round_trip = round_trip
        # Only paramiko's own client has the numbered requests that pipelining needs.
        self.pipelined = isinstance(client, paramiko.SFTPClient)

    def many(self, op: Op, paths: Sequence[str]) -> list[Answer]:
        """``op`` on every path (absolute, or relative to the client's ``chdir``): its answers, in order."""
        if not self.pipelined:
            method: Callable[[str], Any] = getattr(self._client, op)
            return [self._one(method, p) for p in paths]
        answers: list[Answer] = []
        for start in range(0, len(paths), self._in_flight):
            chunk = paths[start : start + self._in_flight]
            answers += self._round_trip(len(chunk), self._burst, _COMMANDS[op], chunk)
        return answers

    def lstat_many(self, paths: Sequence[str]) -> list[Answer]:
        """``lstat`` each path: its attributes (a symlink's own, never its target's) or an ``OSError``."""
        return self.many("lstat", paths)

    def remove_many(self, paths: Sequence[str]) -> list[Answer]:
        """``remove`` (unlink) each path: None when removed, else an ``OSError``."""
        return self.many("remove", paths)

    def rmdir_many(self, paths: Sequence[str]) -> list[Answer]:
        """``rmdir`` each path: None when removed, else an ``OSError``."""
        return self.many("rmdir", paths)

    def _one(self, method: Callable[[str], Any], path: str) -> Answer:
        try:
            answer: Answer = self._round_trip(1, method, path)
        except OSError as exc:
            return exc
        return answer

    def _burst(self, command: int, paths: Sequence[str]) -> list[Answer]:
        """Send every request in one write, then read the answers in large reads (paramiko decodes
        each and hands it to ``_Answers`` by number)."""
        client: Any = self._client
        answers = _Answers()
        packets: list[bytes] = []
        client._write_all = packets.append
        try:
            numbers = [client._async_request(answers, command, client._adjust_cwd(p)) for p in paths]
        finally:
            del client._write_all
        client._write_all(b"".join(packets))
        reader = _Reader(client.sock)
        client._read_all = reader.read
        try:
            while len(answers.got) < len(numbers):
                client._read_response()
        finally:
            del client._read_all
        if reader.pending:
            # Nothing else is in flight on this session: more bytes would mean a lost frame.
            raise paramiko.SFTPError(f"{reader.pending} unexpected bytes after a burst's answers")
        return [answers.result(client, n) for n in numbers]


class _Reader:
    """Serves paramiko's exact-size reads from large reads of the channel."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._buffer = bytearray()
        self._at = 0

    @property
    def pending(self) -> int:
        """Bytes read from the channel and not handed out."""
        return len(self._buffer) - self._at

    def read(self, n: int) -> bytes:
        """Exactly ``n`` bytes; ``EOFError`` when the channel closes first (as paramiko's own)."""
        while self.pending < n:
            chunk = self._sock.recv(max(n - self.pending, _READ_SIZE))
            if not chunk:
                raise EOFError()
            if self._at:
                del self._buffer[: self._at]
                self._at = 0
            self._buffer += chunk
        out = bytes(self._buffer[self._at : self._at + n])
        self._at += n
        return out


class _Answers:
    """Collects the answers paramiko reads for pipelined requests (it calls ``_async_response``)."""

    def __init__(self) -> None:
        self.got: dict[int, tuple[int, paramiko.Message]] = {}

    def _async_response(self, kind: int, msg: paramiko.Message, number: int) -> None:
        self.got[number] = (kind, msg)

    def result(self, client: Any, number: int) -> Answer:
        """The attributes (LSTAT), None (a status OK) or the OSError of an error status."""
        kind, msg = self.got[number]
        if kind == CMD_ATTRS:
            attrs: paramiko.SFTPAttributes = paramiko.SFTPAttributes._from_msg(msg)  # type: ignore[attr-defined]
            return attrs
        if kind != CMD_STATUS:
            raise paramiko.SFTPError(f"unexpected SFTP response type {kind}")
        try:
            client._convert_status(msg)
        except OSError as exc:
            return exc
        return None
