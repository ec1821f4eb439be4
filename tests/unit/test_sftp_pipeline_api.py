"""Contract with paramiko's private members that ``retention.adapters.sftp_pipeline`` relies on.

``Pipeline`` sends SFTP requests through paramiko internals (see its module docstring). These
tests fail, naming the member, when a paramiko upgrade changes one of them: the methods exist
with the expected signatures, the packet-type constants keep their values, and a status or an
attributes answer decodes as expected. The behaviour against a real OpenSSH server is checked
in ``tests/integration/test_sftp_pipeline_contract.py``.
"""

from __future__ import annotations

import errno
import inspect
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar, cast

import paramiko
import paramiko.sftp
import pytest

from retention.adapters import sftp_pipeline
from retention.adapters.sftp_pipeline import CHECKED_AGAINST, Pipeline

P = ParamSpec("P")
R = TypeVar("R")

REQUIREMENTS = Path(__file__).resolve().parents[2] / "requirements.txt"
INSTALLED = paramiko.__version__


def _relied_on(member: str) -> str:
    return (
        f"paramiko {INSTALLED}: retention.adapters.sftp_pipeline relies on {member} "
        f"(checked against paramiko {CHECKED_AGAINST}); adapt Pipeline before upgrading"
    )


# (owner, member, its signature as inspect prints it when looked up on the class)
SIGNATURES: list[tuple[type, str, str]] = [
    (paramiko.SFTPClient, "_async_request", "(self, fileobj, t, *args)"),
    (paramiko.SFTPClient, "_read_response", "(self, waitfor=None)"),
    (paramiko.SFTPClient, "_adjust_cwd", "(self, path)"),
    (paramiko.SFTPClient, "_convert_status", "(self, msg)"),
    (paramiko.SFTPAttributes, "_from_msg", "(msg, filename=None, longname=None)"),
    (paramiko.SFTPClient, "_write_all", "(self, out)"),
    (paramiko.SFTPClient, "_read_all", "(self, n)"),
    # The receiver protocol: paramiko's own SFTPFile implements what _Answers implements.
    (paramiko.SFTPFile, "_async_response", "(self, t, msg, num)"),
]


@pytest.mark.parametrize(
    ("owner", "name", "expected"), SIGNATURES, ids=[f"{o.__name__}.{n}" for o, n, _ in SIGNATURES]
)
def test_private_methods_exist_with_the_expected_signature(owner: type, name: str, expected: str) -> None:
    member = f"paramiko.{owner.__name__}.{name}{expected}"
    found = getattr(owner, name, None)
    assert callable(found), f"{_relied_on(member)}, and it no longer exists"
    signature = str(inspect.signature(found))
    assert signature == expected, f"{_relied_on(member)}, and it is now {name}{signature}"


def test_from_msg_is_a_classmethod() -> None:
    member = "paramiko.SFTPAttributes._from_msg as a classmethod"
    raw = inspect.getattr_static(paramiko.SFTPAttributes, "_from_msg", None)
    assert isinstance(raw, classmethod), f"{_relied_on(member)}, and it is now {raw!r}"


def test_read_response_hands_an_answer_to_its_receiver() -> None:
    member = "SFTPClient._read_response calling fileobj._async_response(t, msg, num)"
    source = inspect.getsource(cast(Any, paramiko.SFTPClient)._read_response)
    assert re.search(r"fileobj\._async_response\(\s*t\s*,\s*msg\s*,\s*num\s*\)", source), (
        f"{_relied_on(member)}, and its source no longer has that call"
    )


@pytest.mark.parametrize(
    ("method", "call"),
    [("_send_packet", r"self\._write_all\(\s*out\s*\)"), ("_read_packet", r"self\._read_all\(\s*4\s*\)")],
)
def test_packets_go_through_the_members_a_burst_shadows(method: str, call: str) -> None:
    member = f"BaseSFTP.{method} writing or reading through self._write_all / self._read_all"
    source = inspect.getsource(getattr(paramiko.SFTPClient, method))
    assert re.search(call, source), f"{_relied_on(member)}, and its source no longer has that call"


# SFTP v3 packet types (draft-ietf-secsh-filexfer-02, section 3), as paramiko.sftp names them.
CONSTANTS = {"CMD_LSTAT": 7, "CMD_REMOVE": 13, "CMD_RMDIR": 15, "CMD_STATUS": 101, "CMD_ATTRS": 105}


@pytest.mark.parametrize(("name", "value"), CONSTANTS.items())
def test_packet_type_constants_have_the_protocol_values(name: str, value: int) -> None:
    member = f"paramiko.sftp.{name} == {value}"
    found = getattr(paramiko.sftp, name, None)
    assert found == value, f"{_relied_on(member)}, and it is now {found!r}"


def _status(code: int, text: str = "text") -> paramiko.Message:
    """An SSH_FXP_STATUS answer's body after the request id: code, message, language tag."""
    msg = paramiko.Message()
    msg.add_int(code)
    msg.add_string(text)
    msg.add_string("")
    return paramiko.Message(msg.asbytes())


def _convert(code: int) -> BaseException | None:
    client: Any = paramiko.SFTPClient.__new__(paramiko.SFTPClient)  # _convert_status uses no state
    try:
        client._convert_status(_status(code))
    except (OSError, EOFError) as exc:
        return exc
    return None


# SSH_FX_* status codes (draft-ietf-secsh-filexfer-02, section 7) -> what Pipeline expects.
@pytest.mark.parametrize(
    ("code", "kind", "errno_"),
    [
        (0, None, None),  # SSH_FX_OK: nothing raised, the answer is None
        (1, EOFError, None),  # SSH_FX_EOF
        (2, OSError, errno.ENOENT),  # SSH_FX_NO_SUCH_FILE
        (3, OSError, errno.EACCES),  # SSH_FX_PERMISSION_DENIED
        (4, OSError, None),  # SSH_FX_FAILURE: an OSError without errno
    ],
)
def test_convert_status_maps_sftp_status_codes(code: int, kind: type | None, errno_: int | None) -> None:
    member = f"SFTPClient._convert_status mapping status {code} to {kind and kind.__name__}(errno={errno_})"
    got = _convert(code)
    if kind is None:
        assert got is None, f"{_relied_on(member)}, and it raised {got!r}"
    elif kind is EOFError:
        assert isinstance(got, EOFError), f"{_relied_on(member)}, and it gave {got!r}"
    else:
        assert isinstance(got, OSError), f"{_relied_on(member)}, and it gave {got!r}"
        assert got.errno == errno_, f"{_relied_on(member)}, and it gave errno {got.errno}"


def test_from_msg_decodes_an_attrs_answer() -> None:
    member = "SFTPAttributes._from_msg(msg) decoding size and permissions"
    msg = paramiko.Message()
    msg.add_int(0x1 | 0x4)  # SSH_FILEXFER_ATTR_SIZE | SSH_FILEXFER_ATTR_PERMISSIONS
    msg.add_int64(1234)
    msg.add_int(stat.S_IFLNK | 0o777)
    attrs = paramiko.SFTPAttributes._from_msg(paramiko.Message(msg.asbytes()))  # type: ignore[attr-defined]
    assert isinstance(attrs, paramiko.SFTPAttributes), f"{_relied_on(member)}, and it gave {attrs!r}"
    assert (attrs.st_size, attrs.st_mode) == (1234, stat.S_IFLNK | 0o777), (
        f"{_relied_on(member)}, and it gave size {attrs.st_size}, mode {attrs.st_mode}"
    )


def test_the_pinned_paramiko_is_the_one_checked() -> None:
    pins = re.findall(r"(?im)^paramiko==([^\s;#]+)", REQUIREMENTS.read_text())
    assert pins == [CHECKED_AGAINST], (
        f"requirements.txt pins paramiko {pins}, retention.adapters.sftp_pipeline was checked against "
        f"{CHECKED_AGAINST}: run tests/unit/test_sftp_pipeline_api.py and "
        "tests/integration/test_sftp_pipeline_contract.py on the new version, then update "
        "CHECKED_AGAINST and the module docstring"
    )
    assert CHECKED_AGAINST in (sftp_pipeline.__doc__ or ""), "the module docstring names another version"


class _Plain:
    """Not a paramiko SFTPClient: public lstat/remove/rmdir only, each call recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def lstat(self, path: str) -> paramiko.SFTPAttributes:
        self.calls.append(("lstat", path))
        if path.startswith("/missing"):
            raise OSError(errno.ENOENT, "No such file")
        attrs = paramiko.SFTPAttributes()
        attrs.st_mode = stat.S_IFREG | 0o644
        return attrs

    def remove(self, path: str) -> None:
        self.calls.append(("remove", path))
        if path.startswith("/denied"):
            raise OSError(errno.EACCES, "Permission denied")

    def rmdir(self, path: str) -> None:
        self.calls.append(("rmdir", path))


def test_any_other_client_gets_one_public_call_per_path_with_the_same_answers() -> None:
    client = _Plain()
    trips: list[int] = []

    def round_trip(requests: int, send: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        trips.append(requests)
        return send(*args, **kwargs)

    pipeline = Pipeline(cast(paramiko.SFTPClient, client), in_flight=2, round_trip=round_trip)
    assert not pipeline.pipelined

    looked = pipeline.lstat_many(["/a", "/missing", "/b"])
    removed = pipeline.remove_many(["/a", "/denied"])
    emptied = pipeline.rmdir_many(["/d"])

    assert isinstance(looked[0], paramiko.SFTPAttributes) and isinstance(looked[2], paramiko.SFTPAttributes)
    assert isinstance(looked[1], OSError) and looked[1].errno == errno.ENOENT
    assert removed[0] is None
    assert isinstance(removed[1], OSError) and removed[1].errno == errno.EACCES
    assert emptied == [None]
    assert client.calls == [
        ("lstat", "/a"),
        ("lstat", "/missing"),
        ("lstat", "/b"),
        ("remove", "/a"),
        ("remove", "/denied"),
        ("rmdir", "/d"),
    ]
    assert trips == [1] * 6


def test_what_is_not_an_error_status_ends_the_call() -> None:
    class Dropped(_Plain):
        def lstat(self, path: str) -> paramiko.SFTPAttributes:
            raise paramiko.SSHException("Server connection dropped")

    with pytest.raises(paramiko.SSHException):
        Pipeline(cast(paramiko.SFTPClient, Dropped())).lstat_many(["/a", "/b"])


def test_in_flight_must_be_positive() -> None:
    with pytest.raises(ValueError, match="in_flight"):
        Pipeline(cast(paramiko.SFTPClient, _Plain()), in_flight=0)
