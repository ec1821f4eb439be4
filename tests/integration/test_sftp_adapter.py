"""The SFTP archive adapter against a real OpenSSH server (fixtures from tests/conftest.py).

The server runs on this machine, so the archive root is the same path on local disk: the tests
build and inspect the archive with plain file operations and erase through SFTP.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import paramiko
import pytest

from harness.services import SftpServer
from retention.adapters.base import EraseOutcome, HoldSet, HoldSource, RecordSource, VerifyOutcome, no_holds
from retention.adapters.sftp import SftpAdapter, SftpTarget
from retention.errors import TransientError, UnknownLocationError, UnsafeTargetError
from tests.integration.archive_tree import snapshot, write

Row = Mapping[str, Any]


def records(rows: Sequence[Row], size: int = 100) -> RecordSource:
    def stream() -> Iterator[Sequence[Row]]:
        for start in range(0, len(rows), size):
            yield rows[start : start + size]

    return stream


def target(root: str, template: str, rows: Sequence[Row], holds: HoldSource = no_holds) -> SftpTarget:
    return SftpTarget(
        category="archive",
        root=root,
        path_template=template,
        records=records(rows),
        subject_field="customer_id",
        holds=holds,
    )


def erase_all(adapter: SftpAdapter, tgt: SftpTarget) -> EraseOutcome:
    """What the engine does: erase each batch as it is located."""
    total = EraseOutcome()
    for batch in adapter.locate(tgt):
        total.add(adapter.erase(tgt, batch))
    return total


def test_erases_due_files_only_and_removes_emptied_directories(
    sftp_client: paramiko.SFTPClient, archive_root: str
) -> None:
    for rel in ("docs/c1/1.txt", "docs/c1/10.txt", "docs/c2/2.txt", "docs/c3/3.txt", "other/1.txt"):
        write(archive_root, rel)
    rows = [
        {"customer_id": "c1", "id": 1},
        {"customer_id": "c2", "id": 2},
        {"customer_id": "c4", "id": 4},  # due, but its file was never written
    ]
    tgt = target(archive_root, "docs/{customer_id}/{id}.txt", rows)
    adapter = SftpAdapter(sftp_client, batch_size=1)

    batches = list(adapter.locate(tgt))
    assert [list(b.keys) for b in batches] == [["docs/c1/1.txt"], ["docs/c2/2.txt"]]
    outcome = EraseOutcome()
    for batch in batches:
        outcome.add(adapter.erase(tgt, batch))

    assert (outcome.erased, outcome.failed, outcome.kept) == (2, 0, {})
    assert snapshot(archive_root) == {
        "docs": "dir",
        "docs/c1": "dir",
        "docs/c1/10.txt": "docs/c1/10.txt",
        "docs/c3": "dir",
        "docs/c3/3.txt": "docs/c3/3.txt",
        "other": "dir",
        "other/1.txt": "other/1.txt",
    }
    assert adapter.verify(tgt).remaining == 0


def test_second_run_is_a_no_op(sftp_client: paramiko.SFTPClient, archive_root: str) -> None:
    write(archive_root, "docs/c1/1.txt")
    write(archive_root, "docs/c1/10.txt")
    tgt = target(archive_root, "docs/{customer_id}/{id}.txt", [{"customer_id": "c1", "id": 1}])
    adapter = SftpAdapter(sftp_client)
    assert erase_all(adapter, tgt).erased == 1
    after_first = snapshot(archive_root)

    assert list(adapter.locate(tgt)) == []
    assert erase_all(adapter, tgt) == EraseOutcome()
    assert after_first == {"docs": "dir", "docs/c1": "dir", "docs/c1/10.txt": "docs/c1/10.txt"}
    assert snapshot(archive_root) == after_first


def test_file_gone_since_locating_is_neither_erased_nor_failed(
    sftp_client: paramiko.SFTPClient, archive_root: str
) -> None:
    write(archive_root, "docs/c1/1.txt")
    write(archive_root, "docs/c2/2.txt")
    rows = [{"customer_id": "c1", "id": 1}, {"customer_id": "c2", "id": 2}]
    tgt = target(archive_root, "docs/{customer_id}/{id}.txt", rows)
    adapter = SftpAdapter(sftp_client)
    [batch] = list(adapter.locate(tgt))
    os.remove(f"{archive_root}/docs/c2/2.txt")  # erased by someone else in between

    outcome = adapter.erase(tgt, batch)

    assert (outcome.erased, outcome.failed) == (1, 0)
    assert snapshot(archive_root) == {}


def test_files_whose_directory_was_pruned_are_reported_absent(
    sftp_client: paramiko.SFTPClient, archive_root: str
) -> None:
    write(archive_root, "docs/c1/1.txt")
    write(archive_root, "docs/c2/2.txt")
    rows = [{"customer_id": "c1", "id": 1}, {"customer_id": "c2", "id": 2}]
    tgt = target(archive_root, "docs/{customer_id}/{id}.txt", rows)
    adapter = SftpAdapter(sftp_client)
    [batch] = list(adapter.named(tgt))
    assert adapter.erase(tgt, batch).erased == 2
    assert snapshot(archive_root) == {}, "their directories were pruned"

    # A resumed step names them again: gone with their directories, so absent (never counted here).
    assert adapter.erase(tgt, batch) == EraseOutcome(absent=["docs/c1/1.txt", "docs/c2/2.txt"])


def test_directories_emptied_up_to_but_never_the_root(
    sftp_client: paramiko.SFTPClient, archive_root: str
) -> None:
    # Branches of different depths: "a" is empty only once all of them are gone.
    rows = [{"customer_id": "c1", "folder": f, "id": i} for i, f in enumerate(("a/b/c", "a/x/y", "a/z"))]
    for row in rows:
        write(archive_root, f"{row['folder']}/{row['id']}.txt")
    tgt = target(archive_root, "{folder}/{id}.txt", rows)

    assert erase_all(SftpAdapter(sftp_client), tgt).erased == 3
    assert os.path.isdir(archive_root)
    assert snapshot(archive_root) == {}


def test_directory_template_removes_only_its_subtree(
    sftp_client: paramiko.SFTPClient, archive_root: str
) -> None:
    due = ("cases/7/a.txt", "cases/7/sub/b.txt", "cases/7/sub/deeper/c.txt")
    for rel in (*due, "cases/70/x.txt", "cases/8/y.txt"):
        write(archive_root, rel)
    tgt = target(archive_root, "cases/{case_id}/", [{"customer_id": "c1", "case_id": 7}])
    adapter = SftpAdapter(sftp_client)

    located = [key for batch in adapter.locate(tgt) for key in batch.keys]
    assert sorted(located) == list(due)
    assert erase_all(adapter, tgt).erased == 3
    assert snapshot(archive_root) == {
        "cases": "dir",
        "cases/70": "dir",
        "cases/70/x.txt": "cases/70/x.txt",
        "cases/8": "dir",
        "cases/8/y.txt": "cases/8/y.txt",
    }
    assert adapter.verify(tgt).remaining == 0


def test_held_subject_and_held_prefix_are_kept_and_reported(
    sftp_client: paramiko.SFTPClient, archive_root: str
) -> None:
    for rel in ("docs/c1/1.txt", "docs/c2/2.txt", "docs/c3/3.txt"):
        write(archive_root, rel)
    rows = [{"customer_id": c, "id": i} for c, i in (("c1", 1), ("c2", 2), ("c3", 3))]
    holds_now = HoldSet()
    reads = 0

    def holds() -> HoldSet:
        nonlocal reads
        reads += 1
        return holds_now

    tgt = target(archive_root, "docs/{customer_id}/{id}.txt", rows, holds)
    adapter = SftpAdapter(sftp_client)
    [batch] = list(adapter.locate(tgt))
    # The holds arrive after locating: erase must read them itself, right before removing.
    holds_now = HoldSet(subjects=frozenset({"c1"}), prefixes=("docs/c3/",))
    outcome = adapter.erase(tgt, batch)

    assert reads == 1
    assert (outcome.erased, outcome.kept, outcome.failed) == (1, {"legal_hold": 2}, 0)
    assert sorted(snapshot(archive_root)) == ["docs", "docs/c1", "docs/c1/1.txt", "docs/c3", "docs/c3/3.txt"]
    assert adapter.verify(tgt) == VerifyOutcome(remaining=0, kept=2)


def test_symlinked_directory_on_the_way_is_never_followed(
    sftp_client: paramiko.SFTPClient, archive_root: str, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    write(str(outside), "1.txt", "outside")
    write(str(outside), "case/a.txt", "outside")
    os.makedirs(f"{archive_root}/docs")
    os.makedirs(f"{archive_root}/cases")
    os.symlink(outside, f"{archive_root}/docs/c1")
    os.symlink(outside / "case", f"{archive_root}/cases/7")
    before = snapshot(str(tmp_path))
    adapter = SftpAdapter(sftp_client)

    for tgt in (
        target(archive_root, "docs/{customer_id}/{id}.txt", [{"customer_id": "c1", "id": 1}]),
        target(archive_root, "cases/{case_id}/", [{"customer_id": "c1", "case_id": 7}]),
    ):
        outcome = erase_all(adapter, tgt)
        assert (outcome.erased, outcome.failed, outcome.errors) == (0, 1, ["symlink_in_path"])
        assert adapter.verify(tgt).remaining == 1

    assert snapshot(str(tmp_path)) == before


def test_symlinked_item_is_unlinked_and_its_target_kept(
    sftp_client: paramiko.SFTPClient, archive_root: str, tmp_path: Path
) -> None:
    outside_file = write(str(tmp_path), "outside/file.txt", "outside")
    write(str(tmp_path), "outside/dir/inner.txt", "outside")
    write(archive_root, "cases/7/own.txt")
    os.makedirs(f"{archive_root}/docs/c1")
    os.symlink(outside_file, f"{archive_root}/docs/c1/1.txt")
    os.symlink(tmp_path / "outside" / "dir", f"{archive_root}/cases/7/linked")
    before_outside = snapshot(str(tmp_path / "outside"))
    adapter = SftpAdapter(sftp_client)

    row = {"customer_id": "c1", "id": 1, "case_id": 7}
    file_outcome = erase_all(adapter, target(archive_root, "docs/{customer_id}/{id}.txt", [row]))
    dir_outcome = erase_all(adapter, target(archive_root, "cases/{case_id}/", [row]))

    assert (file_outcome.erased, file_outcome.failed) == (1, 0)
    assert (dir_outcome.erased, dir_outcome.failed) == (2, 0)
    assert snapshot(archive_root) == {}
    assert snapshot(str(tmp_path / "outside")) == before_outside


def test_file_template_never_removes_a_directory(sftp_client: paramiko.SFTPClient, archive_root: str) -> None:
    write(archive_root, "docs/c1/1.txt/inside.txt")
    tgt = target(archive_root, "docs/{customer_id}/{id}.txt", [{"customer_id": "c1", "id": 1}])
    adapter = SftpAdapter(sftp_client)

    outcome = erase_all(adapter, tgt)

    assert (outcome.erased, outcome.failed, outcome.errors) == (0, 1, ["is_directory"])
    assert os.path.exists(f"{archive_root}/docs/c1/1.txt/inside.txt")
    assert adapter.verify(tgt).remaining == 1


def test_permission_denied_is_reported_as_failed(sftp_client: paramiko.SFTPClient, archive_root: str) -> None:
    write(archive_root, "docs/c1/1.txt")
    write(archive_root, "docs/c2/2.txt")
    locked = f"{archive_root}/docs/c1"
    # The server runs as root, which ignores modes; an immutable directory refuses even root.
    subprocess.run(["chattr", "+i", locked], check=True)
    try:
        rows = [{"customer_id": "c1", "id": 1}, {"customer_id": "c2", "id": 2}]
        tgt = target(archive_root, "docs/{customer_id}/{id}.txt", rows)
        adapter = SftpAdapter(sftp_client)
        outcome = erase_all(adapter, tgt)
        remaining = adapter.verify(tgt).remaining
    finally:
        subprocess.run(["chattr", "-i", locked], check=True)

    assert (outcome.erased, outcome.failed, outcome.errors) == (1, 1, ["permission_denied"])
    assert remaining == 1
    assert sorted(snapshot(archive_root)) == ["docs", "docs/c1", "docs/c1/1.txt"]


def test_verify_catches_a_file_written_again(sftp_client: paramiko.SFTPClient, archive_root: str) -> None:
    write(archive_root, "docs/c1/1.txt")
    tgt = target(archive_root, "docs/{customer_id}/{id}.txt", [{"customer_id": "c1", "id": 1}])
    adapter = SftpAdapter(sftp_client)
    assert erase_all(adapter, tgt).erased == 1
    assert adapter.verify(tgt).remaining == 0

    write(archive_root, "docs/c1/1.txt")

    assert adapter.verify(tgt).remaining == 1


def test_root_that_is_missing_or_a_symlink_is_refused(
    sftp_client: paramiko.SFTPClient, archive_root: str, tmp_path: Path
) -> None:
    write(archive_root, "real/docs/c1/1.txt")
    os.symlink(f"{archive_root}/real", f"{archive_root}/linked")
    adapter = SftpAdapter(sftp_client)
    rows = [{"customer_id": "c1", "id": 1}]

    for root in (f"{archive_root}/missing", f"{archive_root}/linked"):
        tgt = target(root, "docs/{customer_id}/{id}.txt", rows)
        with pytest.raises(UnknownLocationError):
            list(adapter.locate(tgt))
        with pytest.raises(UnknownLocationError):
            adapter.verify(tgt)
    assert os.path.exists(f"{archive_root}/real/docs/c1/1.txt")


@pytest.mark.parametrize(
    ("root", "template", "row"),
    [
        ("{root}", "../{id}.txt", {"id": 1}),
        ("{root}", "/etc/{id}", {"id": 1}),
        ("{root}", "docs/{id}.txt", {"id": "../../x"}),
        ("{root}", "docs/{id}/", {"id": ".."}),
        ("{root}", "docs/{id}.txt", {"id": " "}),
        ("{root}", "docs/{id}.txt", {}),
        ("relative/root", "docs/{id}.txt", {"id": 1}),
        ("{root}/../x", "docs/{id}.txt", {"id": 1}),
        ("/", "docs/{id}.txt", {"id": 1}),
    ],
)
def test_unsafe_roots_templates_and_values_are_refused(
    sftp_client: paramiko.SFTPClient, archive_root: str, root: str, template: str, row: Row
) -> None:
    write(archive_root, "docs/1.txt")
    before = snapshot(archive_root)
    tgt = target(root.format(root=archive_root), template, [row])

    with pytest.raises(UnsafeTargetError):
        erase_all(SftpAdapter(sftp_client), tgt)
    assert snapshot(archive_root) == before


class _StopServerAfterRemoves:
    """The real client, except that the SFTP server is stopped right after the n-th successful remove."""

    def __init__(self, client: paramiko.SFTPClient, server: SftpServer, n: int) -> None:
        self._client = client
        self._server = server
        self._n = n
        self.removed = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def remove(self, path: str) -> None:
        self._client.remove(path)
        self.removed += 1
        if self.removed == self._n:
            self._server.stop()


@pytest.mark.timeout(120)
def test_server_stopped_mid_erase_is_transient_and_a_retry_completes(
    sftp_server: SftpServer, sftp_client: paramiko.SFTPClient, archive_root: str
) -> None:
    from airflow.providers.sftp.hooks.sftp import SFTPHook

    rows = [{"customer_id": f"c{i % 3}", "id": i} for i in range(30)]
    for row in rows:
        write(archive_root, f"docs/{row['customer_id']}/{row['id']}.txt")
    write(archive_root, "docs/c0/keep.txt")
    tgt = target(archive_root, "docs/{customer_id}/{id}.txt", rows)
    flaky = _StopServerAfterRemoves(sftp_client, sftp_server, n=15)
    adapter = SftpAdapter(cast(paramiko.SFTPClient, flaky), batch_size=10)
    first = EraseOutcome()
    try:
        with pytest.raises(TransientError):
            for batch in adapter.locate(tgt):
                first.add(adapter.erase(tgt, batch))
    finally:
        sftp_server.start()

    assert (flaky.removed, first.erased) == (15, 10)
    with SFTPHook(ssh_conn_id="archive_sftp").get_managed_conn() as client:
        adapter = SftpAdapter(client, batch_size=10)
        retry = erase_all(adapter, tgt)
        check = adapter.verify(tgt)

    # The 5 files removed by the interrupted batch are gone, so the retry neither erases nor fails them.
    assert (retry.erased, retry.failed) == (30 - 15, 0)
    assert check.remaining == 0
    assert snapshot(archive_root) == {"docs": "dir", "docs/c0": "dir", "docs/c0/keep.txt": "docs/c0/keep.txt"}


def test_erasing_2000_files(
    sftp_client: paramiko.SFTPClient,
    archive_root: str,
    record_property: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rows = [{"customer_id": f"c{i % 40}", "id": i} for i in range(2000)]
    for row in rows:
        write(archive_root, f"bench/{row['customer_id']}/{row['id']}.txt")
    tgt = target(archive_root, "bench/{customer_id}/{id}.txt", rows)
    adapter = SftpAdapter(sftp_client)

    started = time.perf_counter()
    outcome = erase_all(adapter, tgt)
    seconds = time.perf_counter() - started

    assert (outcome.erased, outcome.failed) == (2000, 0)
    assert snapshot(archive_root) == {}
    # Per file: lstat to locate, then remove (not looked at again); each directory once per batch and step.
    assert adapter.requests < 3 * 2000
    record_property("sftp_requests", adapter.requests)
    record_property("seconds", round(seconds, 3))
    with capsys.disabled():
        print(f"\nSFTP erase of 2000 files: {adapter.requests} requests, {seconds:.2f} s")
