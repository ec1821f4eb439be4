"""Command line: ``python -m retention.cli validate [FOLDER] [--database-url URL]``.

Checks a folder of policies (strict model, order, templates) and, given a database URL,
every table, column, key and relation they name against the live schema (and that no delete
cascades into a table no policy names). Prints one line per policy,
or the problem naming file and field; exits 0 when valid, 2 otherwise. With ``--coverage`` (and a
database URL) it also prints the coverage report (``retention.coverage``): one line per table or
column that looks personal (by name, or by a bounded sample of its values, never printed) but that
no policy covers, and exits 3 if there is any.

``python -m retention.cli hold add|release|list|check --database-url URL ...`` manages the
legal-hold registry (``retention.holds``) in the ledger database, checking each hold as a
run would: the subject against the customer-id format of the policy folder (``_subject.yaml``;
digits only without it), the category against the policy set,
the prefix as a clean relative path. Subjects and prefixes are printed only when asked
(``--show-subjects``); a refusal names the problem, never the value, and exits 2.

``python -m retention.cli ropa [--lang da|en|both] [--format md|json] [FOLDER]`` prints the
record of processing activities (GDPR Art. 30, ``retention.ropa``) of a policy folder: Markdown in
Danish, English or both (Danish first), or the JSON form (both languages). The controller is
Alles-klar's unless ``RETENTION_CONTROLLER_*`` variables say otherwise; the output carries no time
unless ``--generated-at`` gives one, so the same policies print the same bytes. Exits 2 (the
problem on stderr) if the policies are invalid.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from retention.errors import RetentionError, TerminalError
from retention.policy import PolicySet, check_against_schema, explain_paths, load_policies

DEFAULT_FOLDER = Path(__file__).resolve().parents[2] / "include" / "retention_policies"


def validate(folder: Path, database_url: str | None) -> PolicySet:
    """Load and check the policy set; raise ``RetentionError`` on the first problem."""
    policies = load_policies(folder)
    if database_url:
        import sqlalchemy as sa

        from retention.adapters.database import reflect_schema

        engine = sa.create_engine(database_url)
        try:
            check_against_schema(policies, reflect_schema(engine))
        finally:
            engine.dispose()
    return policies


def _paths(policies: PolicySet, url: str) -> list[str]:
    """Each join-path hop the policies use, with the constraint that backs it (already checked)."""
    import sqlalchemy as sa

    from retention.adapters.database import reflect_schema

    engine = sa.create_engine(url)
    try:
        return explain_paths(policies, reflect_schema(engine))
    finally:
        engine.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m retention.cli", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("validate", help="validate a folder of retention policies")
    check.add_argument("folder", nargs="?", type=Path, default=DEFAULT_FOLDER)
    check.add_argument("--database-url", help="SQLAlchemy URL of the business database to check identifiers")
    check.add_argument(
        "--coverage",
        action="store_true",
        help="also list tables and columns that look personal but no policy covers (exit 3 if any)",
    )
    check.add_argument(
        "--coverage-skip",
        action="append",
        default=[],
        metavar="TABLE[.COLUMN]",
        help="a table (not the business's) or a column (judged on purpose) the coverage report leaves out; "
        "repeatable",
    )
    check.add_argument(
        "--coverage-sample",
        type=int,
        default=None,
        metavar="N",
        help="values read from each text column checked (default 200; 0: names only)",
    )
    _hold_commands(sub)
    _ropa_command(sub)
    args = parser.parse_args(argv)
    if args.command == "hold":
        return hold(args)
    if args.command == "ropa":
        return ropa(args)
    if args.coverage and not args.database_url:
        print("invalid: --coverage needs --database-url", file=sys.stderr)
        return 2
    try:
        policies = validate(args.folder, args.database_url)
    except RetentionError as e:
        print(f"invalid: {e}", file=sys.stderr)
        return 2
    for p in policies.policies:
        basis = p.legal_basis.national or p.legal_basis.gdpr
        ret = p.retention
        clock = (
            f"{ret.period:<5} from {ret.anchor:<18}"
            if ret.has_clock
            else f"{'-':<5} {'(on request only)':<23}"
        )
        print(f"ok  {p.id:<26} {clock} {basis[:60]}")
    if args.database_url:
        for line in _paths(policies, args.database_url):
            print(f"path {line}")
    schema = "checked against the database" if args.database_url else "schema not checked (no --database-url)"
    print(f"{len(policies.policies)} policies valid, set {policies.hash[:16]}; {schema}")
    return coverage(args, policies) if args.coverage else 0


def coverage(args: argparse.Namespace, policies: PolicySet) -> int:
    """Print the database's coverage report: 0 if nothing is uncovered, 3 if something is, 2 on failure."""
    import sqlalchemy as sa

    from retention.coverage import DEFAULT_SAMPLE, database_coverage

    sample = DEFAULT_SAMPLE if args.coverage_sample is None else args.coverage_sample
    if sample < 0:
        print("invalid: --coverage-sample must be at least 0", file=sys.stderr)
        return 2
    engine = sa.create_engine(args.database_url)
    try:
        findings = database_coverage(engine, policies, sample=sample, skip=args.coverage_skip)
    except RetentionError as e:
        print(f"coverage failed: {e}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    for finding in findings:
        print(f"coverage {finding.line()}")
    checked = f"up to {sample} values sampled per text column, none printed" if sample else "names only"
    if not findings:
        print(f"coverage: nothing personal-looking outside the policies ({checked})")
        return 0
    print(
        f"coverage: {len(findings)} finding(s) no policy covers ({checked}); write a policy, add the "
        "columns to a policy's fields, or leave the table or column out with --coverage-skip"
    )
    return 3


# -- the record of processing activities --------------------------------------------------------


def _ropa_command(sub: Any) -> None:
    ropa_parser = sub.add_parser(
        "ropa", help="print the record of processing activities (GDPR Art. 30) of a policy folder"
    )
    ropa_parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_FOLDER)
    ropa_parser.add_argument(
        "--lang", choices=("da", "en", "both"), default="both", help="Markdown language (default both)"
    )
    ropa_parser.add_argument(
        "--format", choices=("md", "json"), default="md", help="md (default) or json (both languages)"
    )
    ropa_parser.add_argument(
        "--generated-at",
        help="the generation time to print: ISO 8601 with a time zone, or 'now' (default: none)",
    )


def ropa(args: argparse.Namespace) -> int:
    """Print the record of processing activities; 0, or 2 with the problem on stderr."""
    from retention import ropa as record

    try:
        generated_at = None if args.generated_at is None else _parse_generated_at(args.generated_at)
        policies = load_policies(args.folder)
    except RetentionError as e:
        print(f"invalid: {e}", file=sys.stderr)
        return 2
    controller = record.Controller.from_env(os.environ)
    if args.format == "json":
        doc = record.document(policies, controller=controller, generated_at=generated_at)
        print(json.dumps(doc, indent=2, ensure_ascii=False))
        return 0
    langs: tuple[record.Lang, ...] = record.LANGS if args.lang == "both" else (args.lang,)
    texts = [
        record.render(policies, lang, controller=controller, generated_at=generated_at) for lang in langs
    ]
    sys.stdout.write("\n---\n\n".join(texts))
    return 0


def _parse_generated_at(text: str) -> str:
    if text == "now":
        return datetime.now(UTC).isoformat(timespec="seconds")
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise TerminalError("--generated-at is not an ISO 8601 date-time (or 'now')") from None
    if when.tzinfo is None:
        raise TerminalError("--generated-at needs a time zone (e.g. 2026-06-15T10:00:00+02:00)")
    return when.isoformat()


# -- legal holds --------------------------------------------------------------------------------


def _hold_commands(sub: Any) -> None:
    hold_parser = sub.add_parser("hold", help="add, release, list or check legal holds")
    commands = hold_parser.add_subparsers(dest="hold_command", required=True)
    url_help = "SQLAlchemy URL of the database holding the legal-hold registry (the ledger database)"

    add = commands.add_parser("add", help="hold one customer or one key/path prefix")
    add.add_argument("--database-url", required=True, help=url_help)
    add.add_argument("--reason", required=True, help="why (a case number; never contact data)")
    what = add.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--subject", help="the internal customer id, in the format of the policy folder's _subject.yaml"
    )
    what.add_argument("--prefix", help="a key/path prefix relative to its bucket or archive root")
    add.add_argument("--category", help="one policy id (default: every category)")
    add.add_argument("--until", help="when the hold ends: ISO 8601 with a time zone (default: never)")
    add.add_argument(
        "--policies",
        type=Path,
        default=DEFAULT_FOLDER,
        help="policy folder (its categories, and its _subject.yaml: the customer-id format)",
    )

    release = commands.add_parser("release", help="end a hold from now on (its row stays)")
    release.add_argument("--database-url", required=True, help=url_help)
    release.add_argument("--id", required=True, type=int, help="the hold's id (see hold list)")

    listing = commands.add_parser("list", help="the holds in force (ids, kinds, categories, reasons, dates)")
    listing.add_argument("--database-url", required=True, help=url_help)
    listing.add_argument("--all", action="store_true", help="released and expired holds too")
    listing.add_argument("--show-subjects", action="store_true", help="print the held subjects and prefixes")

    check = commands.add_parser("check", help="check every hold in force as a run does before it erases")
    check.add_argument("--database-url", required=True, help=url_help)
    check.add_argument("--policies", type=Path, default=DEFAULT_FOLDER, help="the policy folder")


def hold(args: argparse.Namespace) -> int:
    """Run one ``hold`` command; 0 on success, 2 (with the problem on stderr) if refused."""
    import sqlalchemy as sa

    from retention.holds import HoldRegistry
    from retention.subject import DEFAULT_SUBJECT

    try:
        engine = sa.create_engine(args.database_url)
    except sa.exc.ArgumentError:
        print("invalid: --database-url is not a SQLAlchemy database URL", file=sys.stderr)
        return 2
    try:
        # add and check judge holds by the policy folder: its categories and customer-id format
        policies = load_policies(args.policies) if args.hold_command in ("add", "check") else None
        registry = HoldRegistry(
            engine, subject_format=DEFAULT_SUBJECT if policies is None else policies.subject
        )
        if args.hold_command == "add":
            categories = None if policies is None or args.category is None else policies.ids
            until = None if args.until is None else _parse_until(args.until)
            registry.ensure_schema()
            hold_id = registry.add(
                reason=args.reason,
                subject=args.subject,
                prefix=args.prefix,
                category=args.category,
                categories=categories,
                until=until,
            )
            print(f"added legal hold {hold_id}")
        elif args.hold_command == "release":
            registry.release(args.id)
            print(f"released legal hold {args.id}")
        elif args.hold_command == "list":
            _print_holds(registry.list(include_inactive=args.all, include_subjects=args.show_subjects))
        else:
            n = registry.check_stored(() if policies is None else policies.ids, datetime.now(UTC))
            print(f"{n} legal holds in force, all valid")
    except RetentionError as e:
        print(f"refused: {e}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    return 0


def _parse_until(text: str) -> datetime:
    try:
        until = datetime.fromisoformat(text)
    except ValueError:
        raise TerminalError("--until is not an ISO 8601 date-time") from None
    if until.tzinfo is None:
        raise TerminalError("--until needs a time zone (e.g. 2027-01-01T00:00:00+01:00)")
    return until


def _print_holds(holds: Sequence[dict[str, Any]]) -> None:
    def when(value: datetime | None) -> str:
        return "-" if value is None else value.isoformat(timespec="seconds")

    for h in holds:
        held = f"  {h['subject'] or h['prefix']}" if "subject" in h else ""
        print(
            f"{h['id']:>6}  {h['kind']:<7}  {h['category'] or '*':<26}  created {when(h['created_at'])}"
            f"  until {when(h['until'])}  released {when(h['released_at'])}{held}  {h['reason']}"
        )
    print(f"{len(holds)} legal holds")


if __name__ == "__main__":
    sys.exit(main())
