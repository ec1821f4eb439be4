"""``SftpAdapter.named``: the items a target's records name, without looking, then erased as located ones are.

A real run erases what ``named`` yields (a dry run locates): ``erase`` looks at the way itself and
removes without looking at the item first, so a missing file or a symlink on the way must end
exactly as it does for located items. The archive is built with plain file operations (the
server runs on this machine) and compared with a copy erased through ``locate``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import paramiko
import pytest

from retention.adapters.base import HoldSet, HoldSource, VerifyOutcome, no_holds
from retention.adapters.sftp import SftpAdapter, SftpItem, SftpTarget
from retention.errors import UnsafeTargetError
from tests.integration.archive_tree import erase_via, snapshot, write

Row = Mapping[str, Any]
TEMPLATE = "docs/{customer_id}/{job}/{id}.txt"


def target(
    root: str, rows: Sequence[Row], template: str = TEMPLATE, holds: HoldSource = no_holds
) -> SftpTarget:
    def stream() -> Iterator[Sequence[Row]]:
        for start in range(0, len(rows), 100):
            yield rows[start : start + 100]

    return SftpTarget(
        category="archive",
        root=root,
        path_template=template,
        records=stream,
        subject_field="customer_id",
        holds=holds,
    )


def test_named_sends_no_request_and_yields_every_rendered_path(
    sftp_client: paramiko.SFTPClient, archive_root: str
) -> None:
    root = Path(archive_root)
    write(root, "docs/c1/0/1.txt")  # only one of the named files exists: named does not look
    rows = [{"customer_id": f"c{i % 2}", "job": 0, "id": i} for i in range(1, 6)]
    holds = HoldSet(subjects=frozenset({"c0"}))
    adapter = SftpAdapter(sftp_client, batch_size=2)

    batches = list(adapter.named(target(archive_root, rows, holds=lambda: holds)))

    assert adapter.requests == 0
    assert [list(b.keys) for b in batches] == [
        ["docs/c1/0/1.txt", "docs/c0/0/2.txt"],
        ["docs/c1/0/3.txt", "docs/c0/0/4.txt"],
        ["docs/c1/0/5.txt"],
    ]
    # Held subjects are named too: erase reads the holds in force and keeps them.
    assert [i for b in batches for i in b.items][:2] == [
        SftpItem("docs/c1/0/1.txt", "c1"),
        SftpItem("docs/c0/0/2.txt", "c0"),
    ]


@pytest.mark.parametrize(
    ("root", "template", "row"),
    [
        ("{root}", "../{id}.txt", {"id": 1}),
        ("{root}", "docs/{id}.txt", {"id": "../../x"}),
        ("{root}", "docs/{id}.txt", {}),
        ("relative/root", "docs/{id}.txt", {"id": 1}),
        ("/", "docs/{id}.txt", {"id": 1}),
    ],
)
def test_named_refuses_unsafe_roots_templates_and_values(
    sftp_client: paramiko.SFTPClient, archive_root: str, root: str, template: str, row: Row
) -> None:
    adapter = SftpAdapter(sftp_client)
    with pytest.raises(UnsafeTargetError):
        list(adapter.named(target(root.format(root=archive_root), [row], template)))
    assert adapter.requests == 0


def test_named_locates_a_directory_template(sftp_client: paramiko.SFTPClient, archive_root: str) -> None:
    root = Path(archive_root)
    for rel in ("cases/7/a.txt", "cases/7/sub/b.txt", "cases/70/x.txt"):
        write(root, rel)
    tgt = target(
        archive_root,
        [{"customer_id": "c1", "case_id": 7}, {"customer_id": "c2", "case_id": 8}],
        "cases/{case_id}/",
    )
    adapter = SftpAdapter(sftp_client)

    named = [(list(b.keys), list(b.items)) for b in adapter.named(tgt)]

    assert adapter.requests > 0  # a directory's files are known only by walking it
    assert named == [(list(b.keys), list(b.items)) for b in adapter.locate(tgt)]
    assert sorted(k for keys, _ in named for k in keys) == ["cases/7/a.txt", "cases/7/sub/b.txt"]


def build(root: Path, outside: Path) -> list[Row]:
    """Due files that exist, are missing (file or directory), held, links, directories, behind a link."""
    rows: list[Row] = []

    def due(customer: str, job: str, n: int) -> str:
        rows.append({"customer_id": customer, "job": job, "id": n})
        return f"docs/{customer}/{job}/{n}.txt"

    for n in range(1, 4):
        write(root, due("c1", "0", n))
    (root / "docs/c1/1").mkdir()
    due("c1", "1", 4)  # its directory exists, the file does not
    due("c9", "0", 5)  # no directory on its way either
    write(root, due("c2", "0", 6))  # held by subject
    write(root, due("c3", "0", 7))  # held by path prefix
    write(root, "docs/c4/0/keep.txt")
    os.symlink(outside / "file.txt", root / due("c4", "0", 8))  # a symlink item
    directory = root / due("c5", "0", 9)
    directory.mkdir(parents=True)
    (directory / "inside.txt").write_text("inside")
    (root / "docs/c6").mkdir()
    os.symlink(outside / "dir", root / "docs/c6/0")  # a symlinked directory on the way
    due("c6", "0", 10)
    write(root, "docs/c1/0/not-due.txt")
    return rows


@pytest.mark.parametrize("via", ["locate", "named"])
def test_erasing_named_items_ends_as_erasing_located_ones(
    sftp_client: paramiko.SFTPClient, archive_root: str, tmp_path: Path, via: str
) -> None:
    outside = tmp_path / "outside"
    write(outside, "file.txt", "outside")
    write(outside, "dir/10.txt", "outside")
    root = Path(archive_root)
    rows = build(root, outside)
    before_outside = snapshot(outside)
    holds = HoldSet(subjects=frozenset({"c2"}), prefixes=("docs/c3/",))
    adapter = SftpAdapter(sftp_client, batch_size=4)

    outcome, yielded, check = erase_via(adapter, target(archive_root, rows, holds=lambda: holds), via)

    # Named: all 10 rendered paths; located: the 8 that exist or that a symlink blocks.
    assert yielded == {"named": 10, "locate": 8}[via]
    assert outcome.erased == 4  # three files and the symlink item (the link, not its target)
    assert outcome.kept == {"legal_hold": 2}
    assert (outcome.failed, sorted(outcome.errors)) == (2, ["is_directory", "symlink_in_path"])
    assert check == VerifyOutcome(remaining=2, kept=2)
    assert snapshot(outside) == before_outside
    # The one difference: the named file found missing leaves its directory empty, so it is pruned.
    assert snapshot(root) == {
        **({"docs/c1/1": "dir"} if via == "locate" else {}),
        "docs": "dir",
        "docs/c1": "dir",
        "docs/c1/0": "dir",
        "docs/c1/0/not-due.txt": "docs/c1/0/not-due.txt",
        "docs/c2": "dir",
        "docs/c2/0": "dir",
        "docs/c2/0/6.txt": "docs/c2/0/6.txt",
        "docs/c3": "dir",
        "docs/c3/0": "dir",
        "docs/c3/0/7.txt": "docs/c3/0/7.txt",
        "docs/c4": "dir",
        "docs/c4/0": "dir",
        "docs/c4/0/keep.txt": "docs/c4/0/keep.txt",
        "docs/c5": "dir",
        "docs/c5/0": "dir",
        "docs/c5/0/9.txt": "dir",
        "docs/c5/0/9.txt/inside.txt": "inside",
        "docs/c6": "dir",
        "docs/c6/0": f"link:{outside / 'dir'}",
    }


def test_a_refused_removal_of_a_named_file_is_reported(
    sftp_client: paramiko.SFTPClient, archive_root: str
) -> None:
    root = Path(archive_root)
    write(root, "docs/c1/0/1.txt")
    write(root, "docs/c2/0/2.txt")
    locked = root / "docs/c1/0"
    # The server runs as root, which ignores modes; an immutable directory refuses even root.
    subprocess.run(["chattr", "+i", str(locked)], check=True)
    try:
        rows = [{"customer_id": "c1", "job": 0, "id": 1}, {"customer_id": "c2", "job": 0, "id": 2}]
        outcome, _, check = erase_via(SftpAdapter(sftp_client), target(archive_root, rows), "named")
    finally:
        subprocess.run(["chattr", "-i", str(locked)], check=True)

    assert (outcome.erased, outcome.failed, outcome.errors) == (1, 1, ["permission_denied"])
    assert check.remaining == 1
    assert sorted(snapshot(root)) == ["docs", "docs/c1", "docs/c1/0", "docs/c1/0/1.txt"]


def test_named_erase_and_verify_cost_about_six_requests_a_file(
    sftp_client: paramiko.SFTPClient, archive_root: str, tmp_path: Path
) -> None:
    """Two directories of its own per file: their look-ups, the remove, two rmdirs, one look to verify."""
    n = 300
    rows = [{"customer_id": f"c{i}", "job": i, "id": i} for i in range(n)]
    template = "{customer_id}/{job}/{id}.txt"  # the benchmark's layout
    first = Path(archive_root, "a")
    for row in rows:
        write(first, template.format(**row))
    second = Path(archive_root, "b")
    shutil.copytree(first, second)
    named, located = SftpAdapter(sftp_client), SftpAdapter(sftp_client)

    by_name = erase_via(named, target(str(first), rows, template), "named")
    by_look = erase_via(located, target(str(second), rows, template), "locate")

    assert by_name == by_look
    assert by_name[0].erased == n and by_name[2].remaining == 0
    assert snapshot(first) == snapshot(second) == {}
    assert n < named.requests < 7 * n
    assert named.requests < located.requests
