"""Contract with paramiko's private members, by behaviour, against a real OpenSSH SFTP server.

``retention.adapters.sftp_pipeline.Pipeline`` sends requests with ``SFTPClient._async_request``,
reads them with ``_read_response`` (which hands each answer to ``_async_response``), and decodes
them with ``_convert_status`` and ``SFTPAttributes._from_msg``; it writes a burst at once and
reads its answers in large reads by shadowing ``_write_all`` and ``_read_all``. These tests check that the
answers it reads are the ones paramiko's public methods give, path by path and in order, over
several bursts, relative to ``chdir`` (``_adjust_cwd``), and that the session stays usable.
The signatures and constants are checked in ``tests/unit/test_sftp_pipeline_api.py``.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar, cast

import paramiko
import pytest

from retention.adapters.sftp_pipeline import CHECKED_AGAINST, Answer, Op, Pipeline

P = ParamSpec("P")
R = TypeVar("R")

CONTRACT = (
    f"paramiko {paramiko.__version__}: Pipeline's pipelined answers (SFTPClient._async_request, "
    f"_read_response -> _async_response, _convert_status, SFTPAttributes._from_msg; checked against "
    f"paramiko {CHECKED_AGAINST}) differ from the public methods' or are not batched"
)


class OneAtATime:
    """The real client behind a plain wrapper: ``Pipeline`` then calls its public methods."""

    def __init__(self, client: paramiko.SFTPClient) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def shape(answer: Answer) -> tuple[Any, ...]:
    """What an answer means: the file type, size and permissions, None, or the error's kind and errno."""
    if isinstance(answer, OSError):
        return ("error", type(answer).__name__, answer.errno)
    if answer is None:
        return ("done",)
    mode = answer.st_mode or 0
    return ("attrs", stat.S_IFMT(mode), stat.S_IMODE(mode), answer.st_size)


@pytest.fixture
def tree(archive_root: str, tmp_path: Path) -> Iterator[Path]:
    """A file, an empty and a full directory, links (to a file outside, dangling) and a locked file."""
    root = Path(archive_root)
    (root / "file.txt").write_text("12345")
    (root / "empty").mkdir()
    (root / "full").mkdir()
    (root / "full" / "inner.txt").write_text("x")
    outside = tmp_path / "outside.txt"
    outside.write_text("outside")
    os.symlink(outside, root / "link")
    os.symlink(root / "nowhere", root / "dangling")
    (root / "locked").mkdir()
    locked = root / "locked" / "kept.txt"
    locked.write_text("locked")
    # Immutable: even root's unlink gets EPERM, which OpenSSH reports as permission denied.
    subprocess.run(["chattr", "+i", str(locked)], check=True)
    try:
        yield root
    finally:
        subprocess.run(["chattr", "-i", str(locked)], check=True)


def answers(client: paramiko.SFTPClient, op: Op, paths: Sequence[str], in_flight: int = 2) -> list[Answer]:
    pipeline = Pipeline(client, in_flight=in_flight)
    assert pipeline.pipelined
    return pipeline.many(op, paths)


def public(client: paramiko.SFTPClient, op: Op, paths: Sequence[str]) -> list[Answer]:
    pipeline = Pipeline(cast(paramiko.SFTPClient, OneAtATime(client)))
    assert not pipeline.pipelined
    return pipeline.many(op, paths)


LOOKED = ["file.txt", "empty", "link", "missing", "dangling", "full/inner.txt", "empty/missing"]


def test_lstat_answers_are_the_public_ones_in_order(sftp_client: paramiko.SFTPClient, tree: Path) -> None:
    paths = [str(tree / p) for p in LOOKED]

    piped = [shape(a) for a in answers(sftp_client, "lstat", paths)]

    assert piped == [shape(a) for a in public(sftp_client, "lstat", paths)], CONTRACT
    assert piped[0] == ("attrs", stat.S_IFREG, (tree / "file.txt").stat().st_mode & 0o7777, 5), CONTRACT
    assert piped[1][:2] == ("attrs", stat.S_IFDIR), CONTRACT
    assert piped[2][:2] == ("attrs", stat.S_IFLNK), f"{CONTRACT}: lstat followed a symlink"
    assert piped[3] == ("error", "FileNotFoundError", errno.ENOENT), CONTRACT
    assert piped[4][:2] == ("attrs", stat.S_IFLNK), CONTRACT


def test_paths_are_relative_to_chdir_as_for_the_public_methods(
    sftp_client: paramiko.SFTPClient, tree: Path
) -> None:
    absolute = [shape(a) for a in answers(sftp_client, "lstat", [str(tree / p) for p in LOOKED])]
    sftp_client.chdir(str(tree))

    relative = [shape(a) for a in answers(sftp_client, "lstat", LOOKED)]

    assert relative == absolute, f"{CONTRACT}: SFTPClient._adjust_cwd no longer applies chdir()"


def test_remove_answers_and_effects(sftp_client: paramiko.SFTPClient, tree: Path) -> None:
    paths = [str(tree / p) for p in ["file.txt", "link", "missing", "empty", "locked/kept.txt", "dangling"]]

    piped = answers(sftp_client, "remove", paths)

    assert piped[0] is None and not (tree / "file.txt").exists(), CONTRACT
    assert piped[1] is None and not (tree / "link").is_symlink(), CONTRACT
    assert isinstance(piped[2], OSError) and piped[2].errno == errno.ENOENT, CONTRACT
    # A directory is refused by unlink: OpenSSH's generic failure, an OSError without errno.
    assert isinstance(piped[3], OSError) and piped[3].errno is None and (tree / "empty").is_dir(), CONTRACT
    assert isinstance(piped[4], OSError) and piped[4].errno == errno.EACCES, CONTRACT
    assert (tree / "locked/kept.txt").exists(), CONTRACT
    assert piped[5] is None and not (tree / "dangling").is_symlink(), CONTRACT


def test_remove_answers_match_the_public_ones(sftp_client: paramiko.SFTPClient, tree: Path) -> None:
    first, second = tree / "a", tree / "b"
    for top in (first, second):
        (top / "dir").mkdir(parents=True)
        (top / "f.txt").write_text("f")
    names = ["f.txt", "dir", "missing", "f.txt"]  # the second remove of f.txt finds nothing

    piped = [shape(a) for a in answers(sftp_client, "remove", [str(first / n) for n in names])]
    plain = [shape(a) for a in public(sftp_client, "remove", [str(second / n) for n in names])]

    assert piped == plain, CONTRACT


def test_rmdir_answers_and_effects(sftp_client: paramiko.SFTPClient, tree: Path) -> None:
    paths = [str(tree / p) for p in ["empty", "full", "missing", "file.txt"]]

    piped = answers(sftp_client, "rmdir", paths)

    assert piped[0] is None and not (tree / "empty").exists(), CONTRACT
    assert isinstance(piped[1], OSError) and piped[1].errno != errno.ENOENT and (tree / "full").is_dir()
    assert isinstance(piped[2], OSError) and piped[2].errno == errno.ENOENT, CONTRACT
    assert isinstance(piped[3], OSError) and (tree / "file.txt").exists(), CONTRACT


def test_many_bursts_match_every_answer_to_its_request(
    sftp_client: paramiko.SFTPClient, archive_root: str
) -> None:
    """2,500 look-ups (three default bursts) of files of distinct sizes, with holes: each in its place."""
    root = Path(archive_root)
    for i in range(0, 300, 3):
        (root / f"{i}.txt").write_text("x" * i)
    paths = [str(root / f"{i % 300}.txt") for i in range(2500)]
    trips: list[int] = []

    def round_trip(requests: int, send: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        trips.append(requests)
        return send(*args, **kwargs)

    got = Pipeline(sftp_client, round_trip=round_trip).lstat_many(paths)

    assert trips == [1000, 1000, 500]
    for i, answer in enumerate(got):
        n = i % 300
        if n % 3:
            assert isinstance(answer, OSError) and answer.errno == errno.ENOENT, (CONTRACT, i)
        else:
            assert isinstance(answer, paramiko.SFTPAttributes) and answer.st_size == n, (CONTRACT, i)


def test_a_burst_goes_out_in_few_ssh_packets_and_its_answers_in_few_reads(
    sftp_client: paramiko.SFTPClient, archive_root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1,000 requests: their packets are written at once (``_write_all`` shadowed), not one SSH
    packet each, and their answers come from large channel reads (``_read_all`` shadowed)."""
    (Path(archive_root) / "f.txt").write_text("x")
    paths = [str(Path(archive_root) / "f.txt")] * 1000
    channel = sftp_client.get_channel()
    assert channel is not None
    transport = channel.get_transport()
    assert transport is not None
    sent: list[int] = []
    reads: list[int] = []
    send_message, recv = transport._send_user_message, channel.recv

    def counting_send(data: Any) -> None:
        sent.append(1)
        send_message(data)

    def counting_recv(nbytes: int) -> bytes:
        reads.append(nbytes)
        return recv(nbytes)

    monkeypatch.setattr(transport, "_send_user_message", counting_send)
    monkeypatch.setattr(channel, "recv", counting_recv)
    got = Pipeline(sftp_client).lstat_many(paths)

    assert all(isinstance(a, paramiko.SFTPAttributes) and a.st_size == 1 for a in got), CONTRACT
    assert len(sent) < 50, f"{CONTRACT}: {len(sent)} SSH packets for 1,000 requests"
    assert len(reads) < 200, f"{CONTRACT}: {len(reads)} channel reads for 1,000 answers"
    # The session's own methods still work after a burst (nothing shadowed is left behind).
    assert "_write_all" not in vars(sftp_client) and "_read_all" not in vars(sftp_client)
    assert sftp_client.lstat(paths[0]).st_size == 1


def test_the_session_stays_usable_between_bursts(sftp_client: paramiko.SFTPClient, tree: Path) -> None:
    pipeline = Pipeline(sftp_client, in_flight=3)
    before = sorted(sftp_client.listdir(str(tree)))

    pipeline.lstat_many([str(tree / p) for p in LOOKED])
    assert sorted(sftp_client.listdir(str(tree))) == before, CONTRACT
    assert sftp_client.lstat(str(tree / "file.txt")).st_size == 5, CONTRACT
    again = pipeline.lstat_many([str(tree / "file.txt")])

    assert isinstance(again[0], paramiko.SFTPAttributes) and again[0].st_size == 5, CONTRACT


def test_a_closed_session_raises_instead_of_waiting(sftp_client: paramiko.SFTPClient, tree: Path) -> None:
    channel = sftp_client.get_channel()
    assert channel is not None
    channel.close()

    with pytest.raises((paramiko.SSHException, EOFError, OSError)) as raised:
        Pipeline(sftp_client).lstat_many([str(tree / "file.txt")] * 3)

    assert not isinstance(raised.value, FileNotFoundError)
