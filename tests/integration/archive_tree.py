"""Archive trees for the SFTP tests: write files, snapshot a tree, run an adapter the engine's way.

The SFTP server runs on this machine, so the tests build and inspect its archive with plain
file operations and erase it through the adapter.
"""

from __future__ import annotations

import os
from pathlib import Path

from retention.adapters.base import EraseOutcome, VerifyOutcome
from retention.adapters.sftp import SftpAdapter, SftpTarget


def write(root: str | Path, rel: str, text: str | None = None) -> Path:
    """A file at ``root/rel`` (directories made as needed) holding ``text``, or its own path."""
    path = Path(root, rel)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(rel if text is None else text)
    return path


def snapshot(top: str | Path) -> dict[str, str]:
    """Every entry under ``top``, links not followed: path -> ``dir``, ``link:<target>`` or the content."""
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, top)
            if os.path.islink(path):
                found[rel] = "link:" + os.readlink(path)
            elif os.path.isdir(path):
                found[rel] = "dir"
            else:
                found[rel] = Path(path).read_text()
    return found


def erase_via(adapter: SftpAdapter, tgt: SftpTarget, via: str) -> tuple[EraseOutcome, int, VerifyOutcome]:
    """What the engine does: batches from ``via`` (``named`` in a real run, ``locate`` in a dry
    run's place), each erased as it comes, then a look again. Returns the summed outcome, how
    many items the batches held, and the verification."""
    outcome = EraseOutcome()
    yielded = 0
    for batch in getattr(adapter, via)(tgt):
        yielded += batch.count
        outcome.add(adapter.erase(tgt, batch))
    return outcome, yielded, adapter.verify(tgt)
