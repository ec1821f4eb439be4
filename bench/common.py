"""The benchmark's fixed choices, shared by its modules, and its progress line (on stderr)."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
POLICY_DIR = REPO / "include" / "retention_policies"
PSEUDONYM_KEY = b"bench-pseudonym-key-0123456789abcdef"
"""The engine's pseudonym key, and the bound's (pgcrypto computes the same pseudonyms)."""
POLICY_BUCKET = "alleskar-documents"
DOCUMENTS = "translation_documents"
S3_PAGE = 1000
"""Versions per ListObjectVersions page and per DeleteObjects request (the S3 maximum)."""
STORES = ("database", "s3", "sftp")
ENGINE_ORDER = ("s3", "sftp", "database")
"""File stores first: the database rows name the files (as the DAGs run them)."""


def say(message: str) -> None:
    """One line of progress on stderr (stdout carries the table, and the child's JSON)."""
    print(f"bench: {message}", file=sys.stderr, flush=True)
