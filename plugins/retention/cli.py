"""Command line: ``python -m retention.cli validate [FOLDER] [--database-url URL]``.

Checks a folder of policies (strict model, order, templates) and, given a database URL,
every table and column they name against the live schema. Prints one line per policy,
or the problem naming file and field; exits 0 when valid, 2 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from retention.errors import RetentionError
from retention.policy import PolicySet, check_against_schema, load_policies

DEFAULT_FOLDER = Path(__file__).resolve().parents[2] / "include" / "retention_policies"


def validate(folder: Path, database_url: str | None) -> PolicySet:
    """Load and check the policy set; raise ``RetentionError`` on the first problem."""
    policies = load_policies(folder)
    if database_url:
        import sqlalchemy as sa

        from retention.adapters.database import reflect_columns

        engine = sa.create_engine(database_url)
        try:
            check_against_schema(policies, reflect_columns(engine))
        finally:
            engine.dispose()
    return policies


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m retention.cli", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("validate", help="validate a folder of retention policies")
    check.add_argument("folder", nargs="?", type=Path, default=DEFAULT_FOLDER)
    check.add_argument("--database-url", help="SQLAlchemy URL of the business database to check identifiers")
    args = parser.parse_args(argv)
    try:
        policies = validate(args.folder, args.database_url)
    except RetentionError as e:
        print(f"invalid: {e}", file=sys.stderr)
        return 2
    for p in policies.policies:
        basis = p.legal_basis.national or p.legal_basis.gdpr
        print(f"ok  {p.id:<26} {p.retention.period:<5} from {p.retention.anchor:<18} {basis[:60]}")
    schema = "checked against the database" if args.database_url else "schema not checked (no --database-url)"
    print(f"{len(policies.policies)} policies valid, set {policies.hash[:16]}; {schema}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
