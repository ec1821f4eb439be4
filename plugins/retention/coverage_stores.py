"""The coverage report's file-store part: S3 prefixes and archive directories no location covers.

A file location's root is its template's fixed part: the text before the first ``{``, cut back to
the last ``/`` (``documents/`` of ``documents/{customer_id}/{id}.pdf``; ``""``, everything, of
``{s3_key}``). A store is walked from the top, one level at a time (an S3 listing with
``Delimiter="/"``, a directory listing): a prefix or directory under a root is covered; one on the
way to a root is walked into; any other is reported (a ``prefix`` or ``directory`` finding) with
the count of objects (keys with at least one stored version, old versions included) or files
under it. Objects or files lying directly in a prefix on the way to a root, outside every root,
are reported as a count for that prefix.

Everything is bounded: a level's listing and each count stop after ``max_keys`` (``max_entries``)
listed entries and then say "at least N". Only prefixes and counts are printed, never an object
key or a file name; a prefix or directory whose own name looks personal (an e-mail address, digits
like a phone or CPR number, a control character) is not printed either: such names are counted
together per level. Symlinks are never followed (counted as files). Nothing is written.

The sweep DAG calls ``s3_coverage`` for each bucket (``policy_buckets`` names the policies' ones;
the deployment's ``bucket_map`` gives the real name) and ``tree_coverage`` for the SFTP archive and
the share; a prefix the system writes itself (the receipts prefix) is passed as ``skip``.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from retention.coverage import Finding, Kind
from retention.coverage_patterns import value_patterns
from retention.errors import TerminalError, TransientError, UnknownLocationError, UnsafeTargetError
from retention.guard import personal_data_kind
from retention.locations import S3Location
from retention.paths import fixed_part
from retention.policy import PolicySet

if TYPE_CHECKING:
    import paramiko
    from mypy_boto3_s3 import S3Client

DEFAULT_MAX_KEYS = 10_000
"""Entries one listing (a level, or the count under one prefix or directory) reads at most."""

TreeStore = Literal["sftp", "filesystem"]


def policy_buckets(policy_set: PolicySet) -> list[str]:
    """The bucket names (as the policies write them) of every S3 location, sorted."""
    return sorted(
        {loc.bucket for p in policy_set.policies for loc in p.locations if isinstance(loc, S3Location)}
    )


def roots(policy_set: PolicySet, store: str, bucket: str | None = None) -> list[str]:
    """The fixed parts of the templates of ``store``'s locations (of ``bucket`` only, for S3), sorted."""
    found = {
        fixed_part(loc.template)
        for p in policy_set.policies
        for loc in p.file_locations()
        if loc.store == store and (not isinstance(loc, S3Location) or loc.bucket == bucket)
    }
    return sorted(found)


def s3_coverage(
    client: S3Client,
    bucket: str,
    policy_bucket: str | None,
    policy_set: PolicySet,
    *,
    max_keys: int = DEFAULT_MAX_KEYS,
    skip: Collection[str] = (),
) -> list[Finding]:
    """The prefixes of the real ``bucket`` that no S3 location of ``policy_bucket`` (its name in the
    policies; None: no policy names the bucket) covers, each with its object count.

    ``skip``: prefixes the system writes itself (the receipts prefix), covered as if a root.
    """
    covered = [*roots(policy_set, "s3", policy_bucket), *_prefixes(skip)]
    lister = _S3Lister(client, bucket, _limit(max_keys))
    return _walk(lister, covered, "prefix", lambda rel: f"{bucket}/{rel}", "object")


def tree_coverage(
    client: paramiko.SFTPClient | None,
    root: str,
    policy_set: PolicySet,
    *,
    store: TreeStore = "sftp",
    max_entries: int = DEFAULT_MAX_KEYS,
    skip: Collection[str] = (),
) -> list[Finding]:
    """The directories under ``root`` that no ``store`` location covers, each with its file count.

    ``client`` is the SFTP session for the archive, or None for a directory of this machine (the
    mounted share). ``root`` is absolute and normalised; ``skip`` as for ``s3_coverage``.
    """
    top = _tree_root(root)
    entries = _local_entries(top) if client is None else _sftp_entries(client, top)
    if entries("") is None:
        raise UnknownLocationError(f"coverage report: the {store} root is not a directory")
    covered = [*roots(policy_set, store), *_prefixes(skip)]
    lister = _TreeLister(entries, _limit(max_entries))
    return _walk(lister, covered, "directory", lambda rel: f"{store}:{rel or './'}", "file")


def _limit(value: int) -> int:
    if value < 1:
        raise ValueError("the listing bound must be at least 1")
    return value


def _prefixes(skip: Iterable[str]) -> list[str]:
    """Skipped prefixes as roots, each ending in ``/`` (``receipts`` covers ``receipts/``, not
    ``receipts-old/``)."""
    return [p if not p or p.endswith("/") else f"{p}/" for p in (s.lstrip("/") for s in skip)]


def _tree_root(root: str) -> str:
    trimmed = root.rstrip("/")
    if not trimmed.startswith("/") or posixpath.normpath(trimmed) != trimmed:
        raise UnsafeTargetError("coverage report: a root directory must be absolute, normalised and not /")
    return trimmed


# -- the walk ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Level:
    """One level of a listing: the prefixes (directories) in it, the items directly in it."""

    subs: list[str]
    """Relative prefixes ending in ``/``."""
    loose: int
    truncated: bool


class _Lister(Protocol):
    limit: int

    def level(self, at: str) -> _Level: ...

    def count(self, under: str) -> tuple[int, bool]:
        """The items under a prefix, at most ``limit`` entries listed; True if it stopped there."""
        ...


def _walk(
    lister: _Lister, covered: list[str], kind: Kind, place: Callable[[str], str], noun: str
) -> list[Finding]:
    """Walk from the top towards the roots; report what lies outside them."""
    if "" in covered:
        return []
    findings: list[Finding] = []
    pending = [""]
    while pending:
        at = pending.pop(0)
        level = lister.level(at)
        findings.extend(_level_findings(lister, level, kind, place(at), noun))
        hidden = _Hidden()
        for sub in level.subs:
            if any(sub.startswith(r) for r in covered):
                continue
            if any(r.startswith(sub) for r in covered):
                pending.append(sub)
                continue
            count = lister.count(sub)
            if _hides(sub[len(at) : -1]):
                hidden.add(count)
            else:
                findings.append(Finding(kind, place(sub), _outside(count, lister.limit, noun)))
        if hidden.names:
            findings.append(hidden.finding(kind, place(at), lister.limit, noun))
    return findings


def _level_findings(lister: _Lister, level: _Level, kind: Kind, place: str, noun: str) -> list[Finding]:
    found: list[Finding] = []
    if level.loose:
        count = f"at least {level.loose}" if level.truncated else str(level.loose)
        found.append(Finding(kind, place, f"{count} {noun}(s) directly in it, outside every location's root"))
    if level.truncated:
        found.append(
            Finding(kind, place, f"listing stopped after {lister.limit} entries: the rest was not checked")
        )
    return found


def _outside(count: tuple[int, bool], limit: int, noun: str) -> str:
    n, more = count
    amount = f"at least {n} {noun}(s) (counting stopped after {limit} entries)" if more else f"{n} {noun}(s)"
    return f"no location's template renders anything here; {amount}"


class _Hidden:
    """Prefixes of one level whose names are not printed, counted together."""

    def __init__(self) -> None:
        self.names = 0
        self.items = 0
        self.more = False

    def add(self, count: tuple[int, bool]) -> None:
        self.names += 1
        self.items += count[0]
        self.more = self.more or count[1]

    def finding(self, kind: Kind, place: str, limit: int, noun: str) -> Finding:
        what = f"{self.names} {kind} name(s) that look like personal data (not shown)"
        return Finding(kind, f"{place}*", f"{what}; {_outside((self.items, self.more), limit, noun)}")


def _hides(name: str) -> bool:
    """A prefix's own name is not printed if it is not plain printable text or looks personal."""
    return not name.isprintable() or bool(value_patterns(name)) or personal_data_kind(name) is not None


# -- S3 ------------------------------------------------------------------------------------------


class _S3Lister:
    """Listings of one bucket through ``ListObjectVersions`` (old versions hold data too)."""

    def __init__(self, client: S3Client, bucket: str, limit: int) -> None:
        from retention.adapters.s3 import classify

        self._client = client
        self._bucket = bucket
        self._classify = classify
        self.limit = limit

    def level(self, at: str) -> _Level:
        subs: list[str] = []
        keys = _Keys()
        truncated = False
        for page, more in self._pages(Prefix=at, Delimiter="/"):
            subs.extend(str(p["Prefix"]) for p in page.get("CommonPrefixes") or ())
            keys.add(page)
            truncated = more
        return _Level(subs, keys.count, truncated)

    def count(self, under: str) -> tuple[int, bool]:
        keys = _Keys()
        truncated = False
        for page, more in self._pages(Prefix=under):
            keys.add(page)
            truncated = more
        return keys.count, truncated

    def _pages(self, **params: Any) -> Iterable[tuple[Any, bool]]:
        """Each page, and whether the listing stops after it with more to list (the bound)."""
        listed = 0
        params = {"Bucket": self._bucket, **params}
        while True:
            page = self._call(MaxKeys=min(1000, self.limit - listed), **params)
            listed += sum(len(page.get(k) or ()) for k in ("CommonPrefixes", "Versions", "DeleteMarkers"))
            more = bool(page.get("IsTruncated"))
            yield page, more and listed >= self.limit
            if not more or listed >= self.limit:
                return
            params["KeyMarker"] = page.get("NextKeyMarker") or ""
            params.pop("VersionIdMarker", None)
            if page.get("NextVersionIdMarker"):
                params["VersionIdMarker"] = page["NextVersionIdMarker"]

    def _call(self, **params: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self._client.list_object_versions(**params)
        except (ClientError, BotoCoreError) as exc:
            failure: Exception = exc
        # "from None": botocore messages may carry the prefix or key (the request URL).
        raise self._classify(failure, "ListObjectVersions", self._bucket) from None


class _Keys:
    """Distinct keys with at least one version, across pages (versions come in key order)."""

    def __init__(self) -> None:
        self.count = 0
        self._last: str | None = None

    def add(self, page: Any) -> None:
        for version in page.get("Versions") or ():
            key = str(version["Key"])
            if key != self._last:
                self.count += 1
                self._last = key


# -- directory trees -----------------------------------------------------------------------------

Entries = Callable[[str], list[tuple[str, bool]] | None]
"""Relative directory (``""`` or ending in ``/``) -> its (name, is a real directory) entries, sorted;
None if it is not there."""


class _TreeLister:
    def __init__(self, entries: Entries, limit: int) -> None:
        self._entries = entries
        self.limit = limit

    def level(self, at: str) -> _Level:
        found = self._entries(at) or []
        listed = found[: self.limit]
        subs = [f"{at}{name}/" for name, is_dir in listed if is_dir]
        return _Level(subs, sum(1 for _, is_dir in listed if not is_dir), len(found) > self.limit)

    def count(self, under: str) -> tuple[int, bool]:
        files = listed = 0
        pending = [under]
        while pending:
            at = pending.pop()
            for name, is_dir in self._entries(at) or []:
                listed += 1
                if listed > self.limit:
                    return files, True
                if is_dir:
                    pending.append(f"{at}{name}/")
                else:
                    files += 1
        return files, False


def _local_entries(root: str) -> Entries:
    def entries(rel: str) -> list[tuple[str, bool]] | None:
        path = f"{root}/{rel}".rstrip("/")
        try:
            with os.scandir(path) as found:
                return sorted((e.name, e.is_dir(follow_symlinks=False)) for e in found)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise TerminalError(f"coverage report: listing the share failed ({_code(exc)})") from None

    return entries


def _sftp_entries(client: paramiko.SFTPClient, root: str) -> Entries:
    import paramiko

    def entries(rel: str) -> list[tuple[str, bool]] | None:
        path = f"{root}/{rel}".rstrip("/")
        try:
            found = client.listdir_attr(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise TerminalError(f"coverage report: listing the archive failed ({_code(exc)})") from None
        except (EOFError, paramiko.SSHException) as exc:
            raise TransientError(f"coverage report: the SFTP session failed ({type(exc).__name__})") from None
        return sorted((a.filename, stat.S_ISDIR(a.st_mode or 0)) for a in found)

    return entries


def _code(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, "unknown")
