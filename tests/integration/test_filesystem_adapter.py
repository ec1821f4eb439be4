"""The filesystem adapter against the real thing: a directory tree in ``tmp_path``.

Mirrors the SFTP archive's tests (``test_sftp_adapter.py``, ``test_sftp_named.py``) case for case
where the case applies, plus what only a local directory allows: descriptors that must all be
closed, a template's fixed part that pruning never climbs above, and the errno mapping (the tests
run as root, which no directory mode refuses, so a refusal is simulated or the mapping tested
directly). Last, the whole engine over a SQLite records table and a share directory.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from retention import stores
from retention.adapters.base import (
    EraseOutcome,
    HoldSet,
    HoldSource,
    RecordSource,
    VerifyOutcome,
    no_holds,
    not_shared,
)
from retention.adapters.database import DatabaseAdapter, RowSelection
from retention.adapters.filesystem import (
    MAX_BATCH,
    FilesystemAdapter,
    FilesystemItem,
    FilesystemTarget,
    build_target,
    classify,
    error_code,
)
from retention.engine import RunContext
from retention.errors import (
    TerminalError,
    TransientError,
    UnknownLocationError,
    UnsafeTargetError,
)
from retention.flow import run_all
from retention.ledger import Ledger
from retention.locations import FilesystemLocation
from retention.policy import load_policies
from tests.integration.archive_tree import snapshot, write

Row = Mapping[str, Any]
TEMPLATE = "docs/{customer_id}/{job}/{id}.txt"


def records(rows: Sequence[Row], size: int = 100) -> RecordSource:
    def stream() -> Iterator[Sequence[Row]]:
        for start in range(0, len(rows), size):
            yield rows[start : start + size]

    return stream


def target(
    root: str | Path, template: str, rows: Sequence[Row], holds: HoldSource = no_holds
) -> FilesystemTarget:
    return FilesystemTarget(
        category="archive",
        root=str(root),
        path_template=template,
        records=records(rows),
        subject_field="customer_id",
        holds=holds,
    )


def erase_via(
    adapter: FilesystemAdapter, tgt: FilesystemTarget, via: str = "locate"
) -> tuple[EraseOutcome, int, VerifyOutcome]:
    """What the engine does: batches from ``via``, each erased as it comes, then a look again."""
    outcome = EraseOutcome()
    yielded = 0
    for batch in getattr(adapter, via)(tgt):
        yielded += batch.count
        outcome.add(adapter.erase(tgt, batch))
    return outcome, yielded, adapter.verify(tgt)


def erase_all(adapter: FilesystemAdapter, tgt: FilesystemTarget) -> EraseOutcome:
    """Erase each located batch as it comes (a dry run's listing, erased)."""
    total = EraseOutcome()
    for batch in adapter.locate(tgt):
        total.add(adapter.erase(tgt, batch))
    return total


@pytest.fixture
def share(tmp_path: Path) -> Path:
    """The share's root: a fresh directory (its siblings in ``tmp_path`` are "outside")."""
    root = tmp_path / "share"
    root.mkdir()
    return root


@pytest.fixture(autouse=True)
def no_descriptor_leaks() -> Iterator[None]:
    """Every test ends with as many open descriptors as it began with: the adapter closes all of its own."""
    before = len(os.listdir("/proc/self/fd"))
    yield
    assert len(os.listdir("/proc/self/fd")) == before


# -- as for the SFTP archive ------------------------------------------------------------------------


def test_erases_due_files_only_and_removes_emptied_directories(share: Path) -> None:
    for rel in ("docs/c1/1.txt", "docs/c1/10.txt", "docs/c2/2.txt", "docs/c3/3.txt", "other/1.txt"):
        write(share, rel)
    rows = [
        {"customer_id": "c1", "id": 1},
        {"customer_id": "c2", "id": 2},
        {"customer_id": "c4", "id": 4},  # due, but its file was never written
    ]
    tgt = target(share, "docs/{customer_id}/{id}.txt", rows)
    adapter = FilesystemAdapter(batch_size=1)

    batches = list(adapter.locate(tgt))
    assert [list(b.keys) for b in batches] == [["docs/c1/1.txt"], ["docs/c2/2.txt"]]
    outcome = EraseOutcome()
    for batch in batches:
        outcome.add(adapter.erase(tgt, batch))

    assert (outcome.erased, outcome.failed, outcome.kept) == (2, 0, {})
    assert snapshot(share) == {
        "docs": "dir",
        "docs/c1": "dir",
        "docs/c1/10.txt": "docs/c1/10.txt",
        "docs/c3": "dir",
        "docs/c3/3.txt": "docs/c3/3.txt",
        "other": "dir",
        "other/1.txt": "other/1.txt",
    }
    assert adapter.verify(tgt) == VerifyOutcome(remaining=0, kept=0)


def test_files_whose_directory_was_pruned_are_reported_absent(share: Path) -> None:
    write(share, "docs/c1/1.txt")
    tgt = target(share, "docs/{customer_id}/{id}.txt", [{"customer_id": "c1", "id": 1}])
    adapter = FilesystemAdapter()
    [named] = list(adapter.named(tgt))
    assert adapter.erase(tgt, named).erased == 1
    assert snapshot(share) == {}, "its directories were pruned"

    # A resumed step names it again: gone with its directory, so absent (never counted here).
    assert adapter.erase(tgt, named) == EraseOutcome(absent=["docs/c1/1.txt"])


def test_second_run_is_a_no_op(share: Path) -> None:
    write(share, "docs/c1/1.txt")
    write(share, "docs/c1/10.txt")
    tgt = target(share, "docs/{customer_id}/{id}.txt", [{"customer_id": "c1", "id": 1}])
    adapter = FilesystemAdapter()
    assert erase_all(adapter, tgt).erased == 1
    after_first = snapshot(share)

    assert list(adapter.locate(tgt)) == []
    assert erase_all(adapter, tgt) == EraseOutcome()
    [named] = list(adapter.named(tgt))
    # named again: found gone, nothing counted, and reported as absent (for a resumed step's count)
    assert adapter.erase(tgt, named) == EraseOutcome(absent=["docs/c1/1.txt"])
    assert after_first == {"docs": "dir", "docs/c1": "dir", "docs/c1/10.txt": "docs/c1/10.txt"}
    assert snapshot(share) == after_first


def test_file_gone_since_locating_is_neither_erased_nor_failed(share: Path) -> None:
    write(share, "docs/c1/1.txt")
    write(share, "docs/c2/2.txt")
    rows = [{"customer_id": "c1", "id": 1}, {"customer_id": "c2", "id": 2}]
    tgt = target(share, "docs/{customer_id}/{id}.txt", rows)
    adapter = FilesystemAdapter()
    [batch] = list(adapter.locate(tgt))
    os.remove(share / "docs/c2/2.txt")  # erased by someone else in between

    outcome = adapter.erase(tgt, batch)

    assert (outcome.erased, outcome.failed) == (1, 0)
    assert snapshot(share) == {}


def test_directories_emptied_up_to_but_never_the_root(share: Path) -> None:
    # Branches of different depths: "a" is empty only once all of them are gone.
    rows = [{"customer_id": "c1", "folder": f, "id": i} for i, f in enumerate(("a/b/c", "a/x/y", "a/z"))]
    for row in rows:
        write(share, f"{row['folder']}/{row['id']}.txt")
    tgt = target(share, "{folder}/{id}.txt", rows)

    assert erase_all(FilesystemAdapter(), tgt).erased == 3
    assert share.is_dir()
    assert snapshot(share) == {}


def test_pruning_never_climbs_above_the_templates_fixed_part(share: Path) -> None:
    write(share, "archive/2024/c1/1.txt")
    write(share, "archive/2024/c2/2.txt")
    rows = [{"customer_id": "c1", "id": 1}, {"customer_id": "c2", "id": 2}]

    outcome = erase_all(FilesystemAdapter(), target(share, "archive/2024/{customer_id}/{id}.txt", rows))

    # The fixed part's own directory may go; the one above it stays even though it is empty now.
    assert outcome.erased == 2
    assert snapshot(share) == {"archive": "dir"}


def test_directory_template_removes_only_its_subtree(share: Path) -> None:
    due = ("cases/7/a.txt", "cases/7/sub/b.txt", "cases/7/sub/deeper/c.txt")
    for rel in (*due, "cases/70/x.txt", "cases/8/y.txt"):
        write(share, rel)
    tgt = target(share, "cases/{case_id}/", [{"customer_id": "c1", "case_id": 7}])
    adapter = FilesystemAdapter()

    located = [key for batch in adapter.locate(tgt) for key in batch.keys]
    assert sorted(located) == list(due)
    assert erase_all(adapter, tgt).erased == 3
    assert snapshot(share) == {
        "cases": "dir",
        "cases/70": "dir",
        "cases/70/x.txt": "cases/70/x.txt",
        "cases/8": "dir",
        "cases/8/y.txt": "cases/8/y.txt",
    }
    assert adapter.verify(tgt) == VerifyOutcome(remaining=0)


def test_held_subject_and_held_prefix_are_kept_and_reported(share: Path) -> None:
    for rel in ("docs/c1/1.txt", "docs/c2/2.txt", "docs/c3/3.txt"):
        write(share, rel)
    rows = [{"customer_id": c, "id": i} for c, i in (("c1", 1), ("c2", 2), ("c3", 3))]
    holds_now = HoldSet()
    reads = 0

    def holds() -> HoldSet:
        nonlocal reads
        reads += 1
        return holds_now

    tgt = target(share, "docs/{customer_id}/{id}.txt", rows, holds)
    adapter = FilesystemAdapter()
    [batch] = list(adapter.locate(tgt))
    # The holds arrive after locating: erase must read them itself, right before removing.
    holds_now = HoldSet(subjects=frozenset({"c1"}), prefixes=("docs/c3/",))
    outcome = adapter.erase(tgt, batch)

    assert reads == 1
    assert (outcome.erased, outcome.kept, outcome.failed) == (1, {"legal_hold": 2}, 0)
    assert sorted(snapshot(share)) == ["docs", "docs/c1", "docs/c1/1.txt", "docs/c3", "docs/c3/3.txt"]
    assert adapter.verify(tgt) == VerifyOutcome(remaining=0, kept=2)


def test_symlinked_directory_on_the_way_is_never_followed(share: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    write(outside, "1.txt", "outside")
    write(outside, "case/a.txt", "outside")
    (share / "docs").mkdir()
    (share / "cases").mkdir()
    os.symlink(outside, share / "docs/c1")
    os.symlink(outside / "case", share / "cases/7")
    before = snapshot(tmp_path)
    adapter = FilesystemAdapter()

    for tgt in (
        target(share, "docs/{customer_id}/{id}.txt", [{"customer_id": "c1", "id": 1}]),
        target(share, "cases/{case_id}/", [{"customer_id": "c1", "case_id": 7}]),
    ):
        for via in ("locate", "named"):
            outcome, yielded, check = erase_via(adapter, tgt, via)
            assert yielded == 1
            assert (outcome.erased, outcome.failed, outcome.errors) == (0, 1, ["symlink_in_path"])
            assert check.remaining == 1

    assert snapshot(tmp_path) == before


def test_directory_swapped_for_a_symlink_after_locating_is_not_followed(share: Path, tmp_path: Path) -> None:
    """Between looking and unlinking the way is opened again, without following links."""
    outside = tmp_path / "outside"
    write(outside, "1.txt", "outside")
    write(share, "docs/c1/1.txt")
    write(share, "docs/c2/2.txt")
    rows = [{"customer_id": "c1", "id": 1}, {"customer_id": "c2", "id": 2}]
    tgt = target(share, "docs/{customer_id}/{id}.txt", rows)
    adapter = FilesystemAdapter()
    [batch] = list(adapter.locate(tgt))
    shutil.rmtree(share / "docs/c1")
    os.symlink(outside, share / "docs/c1")  # same name, now leading outside the root

    outcome = adapter.erase(tgt, batch)

    assert (outcome.erased, outcome.failed, outcome.errors) == (1, 1, ["symlink_in_path"])
    assert snapshot(outside) == {"1.txt": "outside"}
    assert snapshot(share) == {"docs": "dir", "docs/c1": f"link:{outside}"}


def test_a_file_where_a_directory_is_expected_means_nothing_is_there(share: Path) -> None:
    write(share, "docs/c1", "a file, not a directory")
    tgt = target(share, "docs/{customer_id}/{id}.txt", [{"customer_id": "c1", "id": 1}])
    adapter = FilesystemAdapter()

    assert list(adapter.locate(tgt)) == []
    outcome, _, check = erase_via(adapter, tgt, "named")

    assert (outcome, check) == (EraseOutcome(absent=["docs/c1/1.txt"]), VerifyOutcome(remaining=0))
    assert snapshot(share) == {"docs": "dir", "docs/c1": "a file, not a directory"}


def test_symlinked_item_is_unlinked_and_its_target_kept(share: Path, tmp_path: Path) -> None:
    outside_file = write(tmp_path, "outside/file.txt", "outside")
    write(tmp_path, "outside/dir/inner.txt", "outside")
    write(share, "cases/7/own.txt")
    (share / "docs/c1").mkdir(parents=True)
    os.symlink(outside_file, share / "docs/c1/1.txt")
    os.symlink(tmp_path / "outside" / "dir", share / "cases/7/linked")
    before_outside = snapshot(tmp_path / "outside")
    adapter = FilesystemAdapter()

    row = {"customer_id": "c1", "id": 1, "case_id": 7}
    file_outcome = erase_all(adapter, target(share, "docs/{customer_id}/{id}.txt", [row]))
    dir_outcome = erase_all(adapter, target(share, "cases/{case_id}/", [row]))

    assert (file_outcome.erased, file_outcome.failed) == (1, 0)
    assert (dir_outcome.erased, dir_outcome.failed) == (2, 0)
    assert snapshot(share) == {}
    assert snapshot(tmp_path / "outside") == before_outside


def test_file_template_never_removes_a_directory(share: Path) -> None:
    write(share, "docs/c1/1.txt/inside.txt")
    tgt = target(share, "docs/{customer_id}/{id}.txt", [{"customer_id": "c1", "id": 1}])
    adapter = FilesystemAdapter()

    outcome = erase_all(adapter, tgt)

    assert (outcome.erased, outcome.failed, outcome.errors) == (0, 1, ["is_directory"])
    assert (share / "docs/c1/1.txt/inside.txt").exists()
    assert adapter.verify(tgt).remaining == 1


def _refusing_unlink(monkeypatch: pytest.MonkeyPatch, refused: str, code: int) -> None:
    """``os.unlink`` refuses ``refused`` with ``code``: the tests run as root, which modes never refuse."""
    real = os.unlink

    def unlink(path: Any, *, dir_fd: int | None = None) -> None:
        if path == refused:
            raise OSError(code, os.strerror(code))
        real(path, dir_fd=dir_fd)

    monkeypatch.setattr(os, "unlink", unlink)


@pytest.mark.parametrize("via", ["locate", "named"])
def test_permission_denied_is_reported_as_failed(
    share: Path, monkeypatch: pytest.MonkeyPatch, via: str
) -> None:
    write(share, "docs/c1/1.txt")
    write(share, "docs/c2/2.txt")
    rows = [{"customer_id": "c1", "id": 1}, {"customer_id": "c2", "id": 2}]
    tgt = target(share, "docs/{customer_id}/{id}.txt", rows)
    _refusing_unlink(monkeypatch, "1.txt", errno.EACCES)

    outcome, _, check = erase_via(FilesystemAdapter(), tgt, via)

    assert (outcome.erased, outcome.failed, outcome.errors) == (1, 1, ["permission_denied"])
    assert check.remaining == 1
    assert sorted(snapshot(share)) == ["docs", "docs/c1", "docs/c1/1.txt"]


def test_share_gone_mid_erase_is_transient_and_a_retry_completes(
    share: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [{"customer_id": f"c{i % 3}", "id": i} for i in range(30)]
    for row in rows:
        write(share, f"docs/{row['customer_id']}/{row['id']}.txt")
    write(share, "docs/c0/keep.txt")
    tgt = target(share, "docs/{customer_id}/{id}.txt", rows)
    _refusing_unlink(monkeypatch, "5.txt", errno.ESTALE)  # the share went away (NFS: stale handle)
    adapter = FilesystemAdapter(batch_size=10)
    first = EraseOutcome()

    with pytest.raises(TransientError, match="share_unavailable"):
        for batch in adapter.locate(tgt):
            first.add(adapter.erase(tgt, batch))
    monkeypatch.undo()  # the share is back

    retry, _, check = erase_via(adapter, tgt)
    # Batches in path order: c0's ten, c1's ten, then c2's, stopped at its ninth (5.txt): the eight
    # it removed first are gone, so the retry neither erases nor fails them.
    assert (first.erased, retry.erased) == (20, 2)
    assert (retry.failed, check.remaining) == (0, 0)
    assert snapshot(share) == {"docs": "dir", "docs/c0": "dir", "docs/c0/keep.txt": "docs/c0/keep.txt"}


def test_verify_catches_a_file_written_again(share: Path) -> None:
    write(share, "docs/c1/1.txt")
    tgt = target(share, "docs/{customer_id}/{id}.txt", [{"customer_id": "c1", "id": 1}])
    adapter = FilesystemAdapter()
    assert erase_all(adapter, tgt).erased == 1
    assert adapter.verify(tgt).remaining == 0

    write(share, "docs/c1/1.txt")

    assert adapter.verify(tgt).remaining == 1


def test_root_that_is_missing_a_symlink_or_a_file_is_refused(share: Path) -> None:
    write(share, "real/docs/c1/1.txt")
    write(share, "a-file")
    os.symlink(share / "real", share / "linked")
    adapter = FilesystemAdapter()
    rows = [{"customer_id": "c1", "id": 1}]

    for root in (share / "missing", share / "linked", share / "a-file"):
        tgt = target(root, "docs/{customer_id}/{id}.txt", rows)
        with pytest.raises(UnknownLocationError):
            list(adapter.locate(tgt))
        with pytest.raises(UnknownLocationError):
            adapter.verify(tgt)
        batch = next(adapter.named(tgt))  # named does not look ...
        with pytest.raises(UnknownLocationError):
            adapter.erase(tgt, batch)  # ... but erase does
    assert (share / "real/docs/c1/1.txt").exists()


@pytest.mark.parametrize(
    ("root", "template", "row"),
    [
        ("{root}", "../{id}.txt", {"id": 1}),
        ("{root}", "/etc/{id}", {"id": 1}),
        ("{root}", "docs/{id}.txt", {"id": "../../x"}),
        ("{root}", "docs/{id}/", {"id": ".."}),
        ("{root}", "docs/{id}.txt", {"id": "a/./b"}),
        ("{root}", "docs/{id}.txt", {"id": "a\\b"}),
        ("{root}", "docs/{id}.txt", {"id": " "}),
        ("{root}", "docs/{id}.txt", {}),
        ("relative/root", "docs/{id}.txt", {"id": 1}),
        ("{root}/../x", "docs/{id}.txt", {"id": 1}),
        ("/", "docs/{id}.txt", {"id": 1}),
    ],
)
@pytest.mark.parametrize("via", ["locate", "named"])
def test_unsafe_roots_templates_and_values_are_refused(
    share: Path, root: str, template: str, row: Row, via: str
) -> None:
    write(share, "docs/1.txt")
    before = snapshot(share)
    tgt = target(root.format(root=share), template, [row])

    with pytest.raises(UnsafeTargetError):
        erase_via(FilesystemAdapter(), tgt, via)
    assert snapshot(share) == before


def test_erasing_2000_files_in_batches_of_at_most_500(share: Path) -> None:
    rows = [{"customer_id": f"c{i % 40}", "id": i} for i in range(2000)]
    for row in rows:
        write(share, f"bench/{row['customer_id']}/{row['id']}.txt")
    tgt = target(share, "bench/{customer_id}/{id}.txt", rows)
    adapter = FilesystemAdapter()

    sizes = [b.count for b in adapter.named(tgt)]
    outcome, yielded, check = erase_via(adapter, tgt, "locate")

    assert sizes == [MAX_BATCH] * 4
    assert (outcome.erased, outcome.failed, yielded, check.remaining) == (2000, 0, 2000, 0)
    assert snapshot(share) == {}
    with pytest.raises(ValueError, match="batch_size"):
        FilesystemAdapter(batch_size=MAX_BATCH + 1)


# -- as for the SFTP archive's named batches -------------------------------------------------------


def test_named_yields_every_rendered_path_without_looking(share: Path) -> None:
    write(share, "docs/c1/0/1.txt")  # only one of the named files exists: named does not look
    rows = [{"customer_id": f"c{i % 2}", "job": 0, "id": i} for i in range(1, 6)]
    holds = HoldSet(subjects=frozenset({"c0"}))
    adapter = FilesystemAdapter(batch_size=2)

    batches = list(adapter.named(target(share, TEMPLATE, rows, holds=lambda: holds)))

    assert [list(b.keys) for b in batches] == [
        ["docs/c1/0/1.txt", "docs/c0/0/2.txt"],
        ["docs/c1/0/3.txt", "docs/c0/0/4.txt"],
        ["docs/c1/0/5.txt"],
    ]
    # Held subjects are named too: erase reads the holds in force and keeps them.
    assert [i for b in batches for i in b.items][:2] == [
        FilesystemItem("docs/c1/0/1.txt", "c1"),
        FilesystemItem("docs/c0/0/2.txt", "c0"),
    ]
    # Not even the root is looked at: a missing one is found by erase.
    assert len(list(adapter.named(target(share / "missing", TEMPLATE, rows)))) == 3


def test_named_locates_a_directory_template(share: Path) -> None:
    for rel in ("cases/7/a.txt", "cases/7/sub/b.txt", "cases/70/x.txt"):
        write(share, rel)
    tgt = target(
        share, "cases/{case_id}/", [{"customer_id": "c1", "case_id": 7}, {"customer_id": "c2", "case_id": 8}]
    )
    adapter = FilesystemAdapter()

    named = [(list(b.keys), list(b.items)) for b in adapter.named(tgt)]

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
def test_erasing_named_items_ends_as_erasing_located_ones(share: Path, tmp_path: Path, via: str) -> None:
    outside = tmp_path / "outside"
    write(outside, "file.txt", "outside")
    write(outside, "dir/10.txt", "outside")
    rows = build(share, outside)
    before_outside = snapshot(outside)
    holds = HoldSet(subjects=frozenset({"c2"}), prefixes=("docs/c3/",))
    adapter = FilesystemAdapter(batch_size=4)

    outcome, yielded, check = erase_via(adapter, target(share, TEMPLATE, rows, holds=lambda: holds), via)

    # Named: all 10 rendered paths; located: the 8 that exist or that a symlink blocks.
    assert yielded == {"named": 10, "locate": 8}[via]
    assert outcome.erased == 4  # three files and the symlink item (the link, not its target)
    assert outcome.kept == {"legal_hold": 2}
    assert (outcome.failed, sorted(outcome.errors)) == (2, ["is_directory", "symlink_in_path"])
    assert check == VerifyOutcome(remaining=2, kept=2)
    assert snapshot(outside) == before_outside
    # The one difference: the named file found missing leaves its directory empty, so it is pruned.
    assert snapshot(share) == {
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


def test_named_and_located_erasure_agree(share: Path) -> None:
    n = 300
    rows: list[Row] = [{"customer_id": f"c{i % 7}", "job": i % 5, "id": i} for i in range(n)]
    first, second = share / "a", share / "b"
    for i, row in enumerate(rows):
        if i % 10:  # every tenth file is already gone
            write(first, TEMPLATE.format(**row))
    write(first, "docs/c0/0/other.txt")
    shutil.copytree(first, second, symlinks=True)

    by_name = erase_via(FilesystemAdapter(), target(first, TEMPLATE, rows), "named")
    by_look = erase_via(FilesystemAdapter(), target(second, TEMPLATE, rows), "locate")

    assert dataclasses.replace(by_name[0], absent=[]) == by_look[0]
    assert len(by_name[0].absent) == 30, "the named files already gone are reported as absent"
    assert (by_name[0].erased, by_name[1], by_look[1]) == (270, 300, 270)
    assert by_name[2] == by_look[2] == VerifyOutcome(remaining=0)
    assert (
        snapshot(first)
        == snapshot(second)
        == {
            "docs": "dir",
            "docs/c0": "dir",
            "docs/c0/0": "dir",
            "docs/c0/0/other.txt": "docs/c0/0/other.txt",
        }
    )


# -- errors -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "kind", "text"),
    [
        (errno.EACCES, TerminalError, "permission_denied"),
        (errno.EPERM, TerminalError, "permission_denied"),
        (errno.EROFS, TerminalError, "read_only"),
        (errno.ENAMETOOLONG, TerminalError, "os_enametoolong"),
        (errno.EIO, TransientError, "share_unavailable"),
        (errno.ESTALE, TransientError, "share_unavailable"),
        (errno.ETIMEDOUT, TransientError, "share_unavailable"),
        (errno.EAGAIN, TransientError, "share_unavailable"),
    ],
)
def test_os_errors_map_to_terminal_or_transient_with_a_code(
    code: int, kind: type[Exception], text: str
) -> None:
    exc = OSError(code, os.strerror(code), "/share/docs/Jens Hansen/cpr 010203-1234.pdf")

    mapped = classify(exc, "removal")

    assert error_code(exc) == text
    assert type(mapped) is kind
    assert str(mapped) == f"filesystem {text} during removal"  # a code, never the path


# -- through the engine -----------------------------------------------------------------------------


def test_build_target_takes_the_configured_root(share: Path) -> None:
    selection = RowSelection(table="documents", key="id", subject_column="customer_id", anchor="delivered_at")
    asked: list[Sequence[str]] = []

    def columns(cols: Sequence[str]) -> RecordSource:
        asked.append(cols)
        return records([])

    def inputs(roots: Mapping[str, str]) -> stores.TargetInputs:
        return stores.TargetInputs(
            category="docs",
            selection=selection,
            records=columns,
            subject_field="customer_id",
            key_field="id",
            holds=no_holds,
            shared=not_shared,
            pseudonym_key=b"k" * 32,
            roots=roots,
        )

    location = FilesystemLocation(store="filesystem", path="docs/{customer_id}/{id}.pdf")
    tgt = stores.build_target(location, inputs({"filesystem": str(share), "sftp": "/elsewhere"}))

    assert isinstance(tgt, FilesystemTarget)
    assert (tgt.category, tgt.root, tgt.path_template, tgt.subject_field) == (
        "docs",
        str(share),
        "docs/{customer_id}/{id}.pdf",
        "customer_id",
    )
    assert asked == [["customer_id", "id"]]
    with pytest.raises(TerminalError, match="root"):
        build_target(location, inputs({"sftp": "/elsewhere"}))


POLICY = """\
    id: shared_documents
    description: Translated documents kept on the agency's file share.
    legal_basis:
      basis: contract
      gdpr: "Art. 6(1)(b) (contract)"
    rationale: Kept one year after delivery for complaints about the translation.
    retention:
      period: P1Y
      counts_from: event
      event: delivery of the translation
      anchor: delivered_at
    records:
      table: documents
      key: id
      subject: customer_id
    erasure_request:
      action: erase
    cap:
      max_items: 1000
      max_fraction: 1.0
    locations:
      - store: filesystem
        path: "{doc_path}"
      - store: database
        table: documents
        action: delete
"""


def test_a_run_erases_due_files_on_the_share_and_then_their_rows(tmp_path: Path, share: Path) -> None:
    policy_dir = tmp_path / "policies"
    policy_dir.mkdir()
    (policy_dir / "shared_documents.yaml").write_text(textwrap.dedent(POLICY))
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'business.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE documents (id INTEGER PRIMARY KEY, customer_id TEXT NOT NULL,"
            " delivered_at TIMESTAMP, doc_path TEXT)"
        )
    documents = sa.Table("documents", sa.MetaData(), autoload_with=engine)
    # (id, customer, delivered, path, file written): the world's clock is 2026-06-15.
    docs = [
        (1, "c1", datetime(2024, 3, 1, 9), "c1/2024/1.pdf", True),  # due
        (2, "c1", datetime(2025, 6, 1, 9), "c1/2025/2.pdf", True),  # due
        (3, "c2", datetime(2025, 1, 10, 9), "c2/3.pdf", False),  # due, its file already gone
        (4, "c2", datetime(2025, 12, 24, 9), "c2/4.pdf", True),  # not due yet
        (5, "c3", None, "c3/5.pdf", True),  # never delivered: never due
        (6, "c3", datetime(2024, 5, 5, 9), None, False),  # due, no file at all
    ]
    with engine.begin() as conn:
        conn.execute(
            documents.insert(),
            [{"id": i, "customer_id": c, "delivered_at": d, "doc_path": p} for i, c, d, p, _ in docs],
        )
    for _, _, _, path, written in docs:
        if written and path is not None:
            write(share, path)
    write(share, "c1/2024/unindexed.pdf")  # no record names it
    ledger = Ledger(engine)
    ledger.ensure_schema()
    ctx = RunContext(
        run_id="fs_engine_test",
        now=datetime(2026, 6, 15, 12, tzinfo=UTC),
        policies=load_policies(policy_dir),
        database=DatabaseAdapter(engine),
        pseudonym_key=b"k" * 32,
        ledger=ledger,
        adapters={"filesystem": FilesystemAdapter()},
        roots={"filesystem": str(share)},
    )

    outcome = run_all(ctx)

    [files] = [r for r in outcome.results if r.store == "filesystem"]
    assert (files.erased, files.failed, files.remaining, files.verified) == (2, 0, 0, True)
    assert snapshot(share) == {
        "c1": "dir",
        "c1/2024": "dir",
        "c1/2024/unindexed.pdf": "c1/2024/unindexed.pdf",
        "c2": "dir",
        "c2/4.pdf": "c2/4.pdf",
        "c3": "dir",
        "c3/5.pdf": "c3/5.pdf",
    }
    with engine.connect() as conn:
        left = conn.execute(sa.select(documents.c.id).order_by(documents.c.id)).scalars().all()
    assert left == [4, 5]
    assert outcome.summary is not None and outcome.summary.proof.ok
    engine.dispose()
