"""The SFTP adapter's pipelined requests (paramiko's own client) against one request at a time.

Both paths must make the same requests and reach the same result on the same archive: the
pipeline only changes when answers are read, never what is looked at or removed.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import paramiko
import pytest

from retention.adapters.base import HoldSet
from retention.adapters.sftp import SftpAdapter, SftpTarget
from tests.integration.archive_tree import erase_via, snapshot

Row = Mapping[str, Any]


class OneAtATime:
    """The real client behind a plain wrapper: the adapter then sends one request at a time."""

    def __init__(self, client: paramiko.SFTPClient) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def target(root: str, rows: Sequence[Row], holds: HoldSet) -> SftpTarget:
    def stream() -> Iterator[Sequence[Row]]:
        for start in range(0, len(rows), 700):
            yield rows[start : start + 700]

    return SftpTarget(
        category="archive",
        root=root,
        path_template="docs/{customer_id}/{job}/{id}.txt",
        records=stream,
        subject_field="customer_id",
        holds=lambda: holds,
    )


def build(root: Path, outside: Path) -> list[Row]:
    """1,300 due files (more than one burst of requests), some held, missing, linked or directories."""
    rows: list[Row] = []
    for i in range(1300):
        row = {"customer_id": f"c{i % 400}", "job": i % 3, "id": i}
        rows.append(row)
        path = root / f"docs/{row['customer_id']}/{row['job']}/{i}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        if i % 97 == 0:
            continue  # never written
        if i % 101 == 0:
            path.mkdir()  # a directory where a file is expected
            (path / "inside.txt").write_text("x")
        else:
            path.write_text(str(i))
    (root / "docs/c5/keep.txt").write_text("not due")
    os.symlink(outside, root / "docs/c7/linked")
    rows.append({"customer_id": "c7", "job": "linked", "id": 1})
    return rows


@pytest.mark.parametrize("via", ["locate", "named"])
def test_pipelined_and_one_at_a_time_make_the_same_requests_and_leave_the_same_archive(
    sftp_client: paramiko.SFTPClient, archive_root: str, tmp_path: Path, via: str
) -> None:
    outside = tmp_path / "outside"
    (outside / "1.txt").parent.mkdir(parents=True)
    (outside / "1.txt").write_text("outside")
    first, second = Path(archive_root, "a"), Path(archive_root, "b")
    rows = build(first, outside)
    shutil.copytree(first, second, symlinks=True)
    holds = HoldSet(subjects=frozenset({"c1", "c2"}), prefixes=("docs/c3/",))

    pipelined = SftpAdapter(sftp_client)
    single = SftpAdapter(cast(paramiko.SFTPClient, OneAtATime(sftp_client)))
    result_a = erase_via(pipelined, target(str(first), rows, holds), via)
    result_b = erase_via(single, target(str(second), rows, holds), via)

    assert result_a == result_b
    outcome, located, check = result_a
    remaining = check.remaining
    written = [i for i in range(1300) if i % 97]
    directories = [i for i in written if i % 101 == 0]
    # Named items include the files never written: a held one is kept all the same (nothing to erase).
    held = [i for i in (range(1300) if via == "named" else written) if i % 400 in (1, 2, 3)]
    assert set(outcome.errors) == {"is_directory", "symlink_in_path"}
    assert outcome.failed == remaining == len(directories) + 1
    assert outcome.kept == {"legal_hold": len(held)}
    assert outcome.erased == len(written) - len(directories) - len(held)
    # Named, the files never written (and not held) are yielded too; erase finds nothing there.
    missing = [i for i in range(1300) if i % 97 == 0 and i % 400 not in (1, 2, 3)] if via == "named" else []
    assert located == outcome.erased + outcome.failed + len(held) + len(missing)
    assert pipelined.requests == single.requests
    assert snapshot(first) == snapshot(second)
    assert (first / "docs/c5/keep.txt").exists() and (outside / "1.txt").read_text() == "outside"


def test_a_directory_replaced_by_a_symlink_after_locating_is_not_followed(
    sftp_client: paramiko.SFTPClient, archive_root: str, tmp_path: Path
) -> None:
    root = Path(archive_root)
    outside = tmp_path / "outside"
    rows = [{"customer_id": "c1", "job": 0, "id": i} for i in range(20)]
    for row in rows:
        path = root / f"docs/c1/0/{row['id']}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
        (outside / "0").mkdir(parents=True, exist_ok=True)
        (outside / "0" / f"{row['id']}.txt").write_text("outside")
    adapter = SftpAdapter(sftp_client)
    tgt = target(archive_root, rows, HoldSet())
    [batch] = list(adapter.locate(tgt))
    shutil.rmtree(root / "docs/c1")
    os.symlink(outside, root / "docs/c1")

    outcome = adapter.erase(tgt, batch)

    assert (outcome.erased, outcome.failed, outcome.errors) == (0, 20, ["symlink_in_path"])
    assert sorted(os.listdir(outside / "0")) == sorted(f"{i}.txt" for i in range(20))
