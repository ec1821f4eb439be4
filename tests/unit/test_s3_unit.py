"""Pure logic of the S3 adapter: grouping records' keys into listings, and classifying errors."""

from __future__ import annotations

import itertools

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
)

from retention.adapters.s3 import Listing, classify, error_code, group_listings
from retention.errors import TerminalError, TransientError, UnknownLocationError


def client_error(code: str, status: int, operation: str = "ListObjectVersions") -> ClientError:
    response = {
        "Error": {"Code": code, "Message": "about docs/jens-hansen/cv.pdf"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, operation)  # type: ignore[arg-type]


def test_identical_keys_share_one_listing_and_merge_their_subjects() -> None:
    listings = group_listings([("a/1.txt", "c1"), ("a/1.txt", "c2"), ("a/1.txt", None)])

    assert listings == [Listing("a/1.txt", {"a/1.txt": frozenset({"c1", "c2"})}, {"a/1.txt": frozenset()})]


def test_a_listing_knows_the_records_behind_each_key_and_prefix() -> None:
    """A kept version names every record whose row must stay as its index."""
    (listing,) = group_listings([("c/1/", "c1", "7"), ("c/1/x/", "c1", "8"), ("c/1/x/", "c1", "9")])
    assert listing.records_of("c/1/x/deep", exact=False) == frozenset({"7", "8", "9"})
    assert listing.records_of("c/1/y", exact=False) == frozenset({"7"})
    assert listing.records_of("c/2/y", exact=False) == frozenset()
    (exact,) = group_listings([("k", None, "1"), ("k", "c2", "2")])
    assert exact.records_of("k", exact=True) == frozenset({"1", "2"})
    assert exact.subjects_of("k", exact=True) == frozenset({"c2"})


def test_a_key_extending_another_is_served_by_the_shorter_listing() -> None:
    listings = group_listings([("a/10", "c10"), ("a/2", "c2"), ("a/1", "c1"), ("a/1.txt", "c1")])

    assert [listing.prefix for listing in listings] == ["a/1", "a/2"]
    assert listings[0].subjects_of("a/10", exact=True) == frozenset({"c10"})
    assert listings[0].subjects_of("a/1", exact=True) == frozenset({"c1"})
    assert listings[0].subjects_of("a/100", exact=True) is None


def test_an_exact_key_does_not_own_a_longer_key_it_prefixes() -> None:
    (listing,) = group_listings([("docs/1.txt", "c1")])

    assert listing.subjects_of("docs/1.txt", exact=True) == frozenset({"c1"})
    assert listing.subjects_of("docs/1.txt.bak", exact=True) is None


def test_nested_prefixes_share_a_listing_and_a_deep_key_belongs_to_all_of_them() -> None:
    listings = group_listings([("c/1/x/", "inner"), ("c/1/", "outer"), ("c/10/", "other")])

    assert [listing.prefix for listing in listings] == ["c/1/", "c/10/"]
    outer = listings[0]
    assert outer.subjects_of("c/1/x/deep/file", exact=False) == frozenset({"inner", "outer"})
    assert outer.subjects_of("c/1/y", exact=False) == frozenset({"outer"})


def test_listings_never_overlap_and_cover_every_key() -> None:
    keys = ["".join(parts) for n in (1, 2, 3) for parts in itertools.product(["a", "/", "1", "10"], repeat=n)]

    listings = group_listings((k, None) for k in keys)

    prefixes = [listing.prefix for listing in listings]
    for i, p in enumerate(prefixes):
        for q in prefixes[i + 1 :]:
            assert not p.startswith(q) and not q.startswith(p)
    owned = {key for listing in listings for key in listing.owners}
    assert owned == set(keys)
    assert all(key.startswith(listing.prefix) for listing in listings for key in listing.owners)


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("SlowDown", 503),
        ("Throttling", 400),
        ("RequestLimitExceeded", 400),
        ("ServiceUnavailable", 503),
        ("InternalError", 500),
        ("BadGateway", 502),
        ("GatewayTimeout", 504),
    ],
)
def test_throttling_and_server_faults_are_transient(code: str, status: int) -> None:
    error = classify(client_error(code, status), "ListObjectVersions", "docs")

    assert isinstance(error, TransientError)
    assert not error.terminal


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("AccessDenied", 403),
        ("InvalidAccessKeyId", 403),
        ("SignatureDoesNotMatch", 403),
        ("InvalidArgument", 400),
    ],
)
def test_refusals_are_terminal(code: str, status: int) -> None:
    error = classify(client_error(code, status), "DeleteObjects", "docs")

    assert isinstance(error, TerminalError) and not isinstance(error, UnknownLocationError)
    assert code in str(error)


@pytest.mark.parametrize(
    ("code", "status", "operation"), [("NoSuchBucket", 404, "ListObjectVersions"), ("404", 404, "HeadBucket")]
)
def test_a_missing_bucket_is_an_unknown_location_naming_it(code: str, status: int, operation: str) -> None:
    error = classify(client_error(code, status, operation), operation, "docs-archive")

    assert isinstance(error, UnknownLocationError)
    assert "docs-archive" in str(error)


def test_a_missing_object_is_not_mistaken_for_a_missing_bucket() -> None:
    error = classify(client_error("404", 404, "HeadObject"), "HeadObject", "docs")

    assert type(error) is TerminalError


@pytest.mark.parametrize(
    "exc",
    [
        EndpointConnectionError(endpoint_url="http://127.0.0.1:9/docs/jens-hansen/cv.pdf"),
        ReadTimeoutError(endpoint_url="http://127.0.0.1:9/docs/jens-hansen/cv.pdf"),
        ConnectionClosedError(endpoint_url="http://127.0.0.1:9/docs/jens-hansen/cv.pdf"),
    ],
)
def test_connection_failures_and_read_timeouts_are_transient_and_name_no_key(exc: Exception) -> None:
    error = classify(exc, "HeadObject", "docs")

    assert isinstance(error, TransientError)
    assert "jens-hansen" not in str(error)


@pytest.mark.parametrize("exc", [NoCredentialsError(), ParamValidationError(report="bad Key")])
def test_local_client_faults_are_terminal(exc: Exception) -> None:
    assert type(classify(exc, "ListObjectVersions", "docs")) is TerminalError


def test_messages_carry_the_code_and_bucket_but_not_the_servers_message() -> None:
    message = str(classify(client_error("AccessDenied", 403), "ListObjectVersions", "docs"))

    assert "AccessDenied" in message and "'docs'" in message
    assert "jens-hansen" not in message


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        ({"Code": "AccessDenied"}, "AccessDenied"),
        ({"Code": "<b>x y</b>"}, "bxyb"),
        ({}, "Unknown"),
        (None, "Unknown"),
    ],
)
def test_error_codes_are_reduced_to_safe_tokens(error: object, expected: str) -> None:
    assert error_code({"Error": error}) == expected
