"""Named points where the fault suite kills the process, as a worker killed there would be.

``RETENTION_KILL_AT=<point>[,<point>...]`` in the environment of a process makes it kill itself
(SIGKILL: no cleanup, no ``finally``, no ledger flush) the first time it reaches one of the
points. The fault suite sets it in a child process that runs a DAG, and then resumes the run
in another; without the variable, reaching a point does nothing. The points:

- ``after_erase:<store>``: a batch was erased (for the database: its transaction committed) and
  its outcome has not reached the ledger.
- ``before_database_pass``: the file stores' steps are done and the database pass has not begun.
"""

from __future__ import annotations

import logging
import os
import signal

KILL_AT = "RETENTION_KILL_AT"
POINTS = (
    "after_erase:database",
    "after_erase:s3",
    "after_erase:sftp",
    "after_erase:filesystem",
    "before_database_pass",
)

log = logging.getLogger(__name__)


def reach(point: str) -> None:
    """Kill this process here if ``RETENTION_KILL_AT`` names ``point``; otherwise nothing."""
    wanted = os.environ.get(KILL_AT)
    if not wanted:
        return
    named = wanted.split(",")
    unknown = sorted(set(named) - set(POINTS))
    if unknown:
        raise ValueError(f"{KILL_AT} names no such point: {', '.join(unknown)}")
    if point not in named:
        return
    log.warning("killing this process at %s (%s is set)", point, KILL_AT)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os.kill(os.getpid(), signal.SIGKILL)
