"""Fault proxies: put one between the code under test and a real service, then tell it to misbehave.

``TcpFaultProxy`` relays bytes to PostgreSQL or to sshd. The test can drop every open
connection at once (``drop``), drop them after a number of bytes the client sends
(``drop_after``), refuse new ones (``refuse``), stop relaying while keeping the connections
open (``stall``: a hung server or network), or delay every chunk (``slow``).

``S3FaultProxy`` relays HTTP to the S3 server. The test can answer the next N requests of one
operation with an S3 error (``fail``: ``SlowDown``/503, ``InternalError``/500, ...), make
``DeleteObjects`` report per-key errors for matching keys without deleting them
(``fail_keys``), or stall. It counts requests per operation (``counts``).

The services themselves stay real: the proxies only relay, drop, delay or answer in their
place, as a network or an overloaded server would.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import http.client
import re
import socket
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit
from xml.etree import ElementTree as ET

from harness.server_process import LOOPBACK

_POLL = 0.05
_CHUNK = 65536
_DELIVERED = 0.5
"""Seconds a delivered chunk has at the server before the connection drops."""


@dataclass(frozen=True)
class _Trigger:
    pattern: bytes
    nth: int
    then_refuse: bool
    armed_by: bytes | None
    deliver: bool


class TcpFaultProxy:
    """A TCP relay from ``127.0.0.1:port`` to ``upstream``, with faults on demand."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server((LOOPBACK, 0))
        self._listener.settimeout(_POLL)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: list[tuple[socket.socket, socket.socket]] = []
        self._stalled = threading.Event()
        self._refusing = False
        self._delay = 0.0
        self._drop_budget: int | None = None
        self._trigger: _Trigger | None = None
        self._tail = b""
        self.triggered = threading.Event()
        """Set when ``drop_when_sent`` (or ``drop_after``) fired."""
        self._closing = threading.Event()
        self.connections = 0
        """How many client connections were accepted (relayed or refused)."""
        self._thread = threading.Thread(target=self._accept_loop, name="tcp-fault-proxy", daemon=True)
        self._thread.start()

    # -- controls ------------------------------------------------------------------------------

    def drop(self) -> int:
        """Close every open connection now, both sides; return how many were dropped."""
        with self._lock:
            pairs, self._open = self._open, []
        for pair in pairs:
            _close(*pair)
        return len(pairs)

    def drop_after(self, n_bytes: int) -> None:
        """Drop every connection once the clients have sent ``n_bytes`` more (mid-statement)."""
        with self._lock:
            self._drop_budget = n_bytes

    def drop_when_sent(
        self,
        pattern: bytes,
        *,
        nth: int = 1,
        then_refuse: bool = False,
        armed_by: bytes | None = None,
        deliver: bool = False,
    ) -> None:
        """Drop every connection when a client sends ``pattern`` for the ``nth`` time, before it
        reaches the server (PostgreSQL's protocol carries statements and parameters in clear:
        ``b"DELETE FROM"`` drops mid-batch); with ``then_refuse`` the server stays unreachable.

        ``armed_by``: count ``pattern`` only once a client has sent this first (``b"DELETE FROM"``
        then ``b"COMMIT"``: the commit of a deleting transaction). ``deliver``: the matching chunk
        reaches the server, and the connection drops before its answer comes back (a COMMIT that
        the server carried out and whose answer the client never saw)."""
        with self._lock:
            self._trigger = _Trigger(pattern, nth, then_refuse, armed_by, deliver)
            self._tail = b""

    def refuse(self, on: bool = True) -> None:
        """Accept new connections and close them at once (a server that is down)."""
        self._refusing = on

    def stall(self, on: bool = True) -> None:
        """Stop relaying in both directions; connections stay open (a hung server)."""
        if on:
            self._stalled.set()
        else:
            self._stalled.clear()

    def slow(self, seconds_per_chunk: float) -> None:
        """Delay every relayed chunk (a slow network)."""
        self._delay = seconds_per_chunk

    def heal(self) -> None:
        """Back to a plain relay (open connections stay as they are)."""
        self.stall(False)
        self.refuse(False)
        self.slow(0.0)
        with self._lock:
            self._drop_budget = None
            self._trigger = None

    def close(self) -> None:
        self._closing.set()
        self._stalled.clear()
        self.drop()
        self._thread.join(timeout=5)
        self._listener.close()

    def __enter__(self) -> TcpFaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- relay ---------------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            if self._refusing:
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.append((client, server))
            for src, dst, counted in ((client, server, True), (server, client, False)):
                threading.Thread(target=self._pump, args=(src, dst, counted), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, counted: bool) -> None:
        src.settimeout(_POLL)
        while not self._closing.is_set():
            if self._stalled.is_set():
                time.sleep(_POLL)
                continue
            try:
                data = src.recv(_CHUNK)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            while self._stalled.is_set() and not self._closing.is_set():
                time.sleep(_POLL)  # received while stalling: held, not relayed
            if self._delay:
                time.sleep(self._delay)
            if counted and (self._spend(len(data)) or (hit := self._matched(data))):
                self._fire(src, dst, data if hit and hit.deliver else None)
                return
            try:
                dst.sendall(data)
            except OSError:
                break
        self._forget(src, dst)

    def _fire(self, client: socket.socket, server: socket.socket, deliver: bytes | None) -> None:
        """Drop every connection; first hand ``deliver`` to the server, with the client gone."""
        self.triggered.set()
        if deliver is not None:
            _close(client)  # the answer has nowhere to go
            with contextlib.suppress(OSError):
                server.sendall(deliver)
            time.sleep(_DELIVERED)  # the server reads and carries it out before the drop
        self.drop()

    def _spend(self, n: int) -> bool:
        """Count ``n`` bytes against the drop budget; True when it is exhausted."""
        with self._lock:
            if self._drop_budget is None:
                return False
            self._drop_budget -= n
            if self._drop_budget > 0:
                return False
            self._drop_budget = None
            return True

    def _matched(self, data: bytes) -> _Trigger | None:
        """The ``drop_when_sent`` trigger if ``data`` completes its pattern's ``nth`` occurrence."""
        with self._lock:
            trigger = self._trigger
            if trigger is None:
                return None
            window = self._tail + data
            if trigger.armed_by is not None:
                at = window.find(trigger.armed_by)
                if at < 0:
                    keep = len(trigger.armed_by) - 1
                    self._tail = window[-keep:] if keep else b""
                    return None
                window = window[at + len(trigger.armed_by) :]
                trigger = self._trigger = dataclasses.replace(trigger, armed_by=None)
            seen = window.count(trigger.pattern)
            keep = len(trigger.pattern) - 1
            self._tail = window[-keep:] if keep else b""
            if seen < trigger.nth:
                self._trigger = dataclasses.replace(trigger, nth=trigger.nth - seen)
                return None
            self._trigger = None
            if trigger.then_refuse:
                self._refusing = True
            return trigger

    def _forget(self, a: socket.socket, b: socket.socket) -> None:
        with self._lock:
            self._open = [p for p in self._open if a not in p]
        _close(a, b)


def _close(*socks: socket.socket) -> None:
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()


# -- S3 over HTTP ---------------------------------------------------------------------------------

_S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
_S3 = "{" + _S3_NS + "}"
ET.register_namespace("", _S3_NS)  # S3 documents use the default namespace, never a prefix


def s3_operation(method: str, path: str, query: str) -> str:
    """The S3 API operation of a path-style request (``ListObjectVersions``, ``DeleteObjects``...)."""
    params = parse_qs(query, keep_blank_values=True)
    has_key = len(path.strip("/").split("/", 1)) == 2
    if method == "POST" and "delete" in params:
        return "DeleteObjects"
    if method == "GET" and "versions" in params:
        return "ListObjectVersions"
    named = {
        "object-lock": "ObjectLockConfiguration",
        "versioning": "BucketVersioning",
        "retention": "ObjectRetention",
        "legal-hold": "ObjectLegalHold",
        "tagging": "Tagging",
    }
    for param, name in named.items():
        if param in params:
            return f"{method.title()}{name}"
    if not has_key:
        if method == "GET":
            return "ListObjectsV2" if params.get("list-type") == ["2"] else "ListObjects"
        return f"{method.title()}Bucket"
    return {"GET": "GetObject", "HEAD": "HeadObject", "PUT": "PutObject", "DELETE": "DeleteObject"}.get(
        method, method
    )


@dataclass
class _Failure:
    operation: str
    status: int
    code: str
    times: int


@dataclass
class S3FaultProxy:
    """An HTTP relay to an S3 endpoint that fails chosen operations or keys on demand."""

    upstream_url: str
    counts: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    """How many requests of each operation were answered with an injected error."""
    key_errors: int = 0
    """How many per-key DeleteObjects errors were reported (those versions stayed)."""

    def __post_init__(self) -> None:
        up = urlsplit(self.upstream_url)
        self._upstream = (up.hostname or LOOPBACK, up.port or 80)
        self._lock = threading.Lock()
        self._failures: list[_Failure] = []
        self._bad_keys: re.Pattern[str] | None = None
        self._stalled = threading.Event()
        self._server = ThreadingHTTPServer((LOOPBACK, 0), _handler(self))
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name="s3-fault-proxy", daemon=True).start()

    @property
    def endpoint_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def fail(self, operation: str, *, status: int = 503, code: str = "SlowDown", times: int = 1) -> None:
        """Answer the next ``times`` requests of ``operation`` with ``status``/``code``, not relayed."""
        with self._lock:
            self._failures.append(_Failure(operation, status, code, times))

    def fail_keys(self, pattern: str | None) -> None:
        """``DeleteObjects`` leaves keys matching ``pattern`` in place and reports an error for each."""
        self._bad_keys = re.compile(pattern) if pattern else None

    def stall(self, on: bool = True) -> None:
        """Hold every request until unstalled (a hung endpoint)."""
        if on:
            self._stalled.set()
        else:
            self._stalled.clear()

    def heal(self) -> None:
        with self._lock:
            self._failures.clear()
        self._bad_keys = None
        self.stall(False)

    def close(self) -> None:
        self._stalled.clear()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> S3FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _injected(self, operation: str) -> _Failure | None:
        with self._lock:
            self.counts[operation] += 1
            for f in self._failures:
                if f.operation == operation and f.times > 0:
                    f.times -= 1
                    self.failed[operation] += 1
                    return f
        return None

    def _relay(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        while self._stalled.is_set():
            time.sleep(_POLL)
        conn = http.client.HTTPConnection(*self._upstream, timeout=60)
        try:
            conn.request(method, path, body=body or None, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.getheaders(), resp.read()
        finally:
            conn.close()

    def _delete_objects(
        self, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """Relay a DeleteObjects without the keys that must fail; add an <Error> for each of them."""
        pattern = self._bad_keys
        if pattern is None:
            return self._relay("POST", path, headers, body)
        request = ET.fromstring(body)  # noqa: S314 - the test's own client's request
        kept: list[tuple[str, str | None]] = []
        for obj in list(request):
            key = obj.findtext(f"{_S3}Key") or obj.findtext("Key") or ""
            if obj.tag.endswith("Object") and pattern.search(key):
                kept.append((key, obj.findtext(f"{_S3}VersionId") or obj.findtext("VersionId")))
                request.remove(obj)
        if not kept:
            return self._relay("POST", path, headers, body)
        new_body = ET.tostring(request, xml_declaration=True, encoding="UTF-8")
        headers = _rechecksummed(headers, new_body)
        if any(o.tag.endswith("Object") for o in request):
            status, resp_headers, resp_body = self._relay("POST", path, headers, new_body)
            if status != 200:
                return status, resp_headers, resp_body
            result = ET.fromstring(resp_body)  # noqa: S314 - the local test server's answer
        else:
            status, resp_headers, result = (
                200,
                [("Content-Type", "application/xml")],
                ET.Element(f"{_S3}DeleteResult"),
            )
        for key, version in kept:
            err = ET.SubElement(result, f"{_S3}Error")
            ET.SubElement(err, f"{_S3}Key").text = key
            if version:
                ET.SubElement(err, f"{_S3}VersionId").text = version
            ET.SubElement(err, f"{_S3}Code").text = "InternalError"
            ET.SubElement(err, f"{_S3}Message").text = "injected by the fault proxy"
        with self._lock:
            self.key_errors += len(kept)
        return status, resp_headers, ET.tostring(result, xml_declaration=True, encoding="UTF-8")


def _rechecksummed(headers: dict[str, str], body: bytes) -> dict[str, str]:
    """The request's headers for a changed body: length and the checksums S3 may verify."""
    out = {k: v for k, v in headers.items() if k.lower() not in ("content-length", "content-md5")}
    out = {k: v for k, v in out.items() if not k.lower().startswith("x-amz-checksum-")}
    out["Content-Length"] = str(len(body))
    out["Content-MD5"] = base64.b64encode(hashlib.md5(body).digest()).decode()  # noqa: S324 - S3's own
    out["x-amz-checksum-crc32"] = base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()
    if "x-amz-content-sha256" in {k.lower() for k in out}:
        out = {k: v for k, v in out.items() if k.lower() != "x-amz-content-sha256"}
        out["x-amz-content-sha256"] = hashlib.sha256(body).hexdigest()
    return out


_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "server", "date"}
"""Headers the proxy writes itself (``send_response`` adds ``Server`` and ``Date``)."""


def _handler(proxy: S3FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
            return None

        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            split = urlsplit(self.path)
            operation = s3_operation(self.command, split.path, split.query)
            injected = proxy._injected(operation)
            if injected is not None:
                self._answer(
                    injected.status, [("Content-Type", "application/xml")], _error_xml(injected.code)
                )
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection",)}
            if operation == "DeleteObjects":
                status, resp_headers, resp_body = proxy._delete_objects(self.path, headers, body)
            else:
                status, resp_headers, resp_body = proxy._relay(self.command, self.path, headers, body)
            self._answer(status, resp_headers, resp_body)

        def _answer(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
            self.send_response(status)
            length = str(len(body))
            for k, v in headers:
                if k.lower() == "content-length" and self.command == "HEAD":
                    length = v  # a HEAD answers the object's length, with no body
                elif k.lower() not in _HOP_BY_HOP:
                    self.send_header(k, v)
            self.send_header("Content-Length", length)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

    return Handler


def _error_xml(code: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Error><Code>{code}</Code><Message>injected by the fault proxy</Message>"
        "<RequestId>fault-proxy</RequestId></Error>"
    ).encode()


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Wait until ``condition()`` holds; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(_POLL)
