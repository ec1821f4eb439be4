"""The reference world: Alles-klar's business schema and a deterministic generator (the public names).

``generate`` fills a business database (PostgreSQL or SQLite), optionally a versioned S3
bucket and an SFTP archive, with a world in which every row was given a *fate* before it
was written: due, not due (each at least ``MARGIN`` away from its rule's cutoff at
``now``), or a NULL anchor (never due). The returned ``World`` is the ground truth computed
from those fates, never by querying the stores. A fixed seed gives an identical world.

The pieces, one job each:

- ``harness.world_schema``: the business tables (``metadata``, ``create_schema``);
- ``harness.world_rules``: the world's clock (``NOW``) and default retention rules (``RULES``);
- ``harness.world_size``: ``WorldSize`` (row counts and fractions);
- ``harness.world_personas``: customer and contact identities;
- ``harness.world_truth``: fates, profiles and the ``World``;
- ``harness.world_gen``: the deterministic plan and its row streams;
- ``harness.world_stores``: ``generate``, writing the streams into the stores.
"""

from __future__ import annotations

from harness.world_rules import COPENHAGEN, MARGIN, NOW, RULE_BY_TABLE, RULES, TABLES, Rule
from harness.world_schema import create_schema, metadata
from harness.world_size import WorldSize
from harness.world_stores import generate
from harness.world_truth import Canaries, CustomerInventory, Fate, FileCounts, Profile, TableCounts, World

__all__ = [
    "COPENHAGEN",
    "MARGIN",
    "NOW",
    "RULES",
    "RULE_BY_TABLE",
    "TABLES",
    "Canaries",
    "CustomerInventory",
    "Fate",
    "FileCounts",
    "Profile",
    "Rule",
    "TableCounts",
    "World",
    "WorldSize",
    "create_schema",
    "generate",
    "metadata",
]
