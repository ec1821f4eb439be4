"""The one serializer each way between the engine's typed values and JSON.

XCom, the ledger's ``detail`` and the receipt carry JSON; everything inside the engine is a
typed value of ``retention.results``. ``to_json`` and ``from_json`` are the only crossing,
so a field renamed in a dataclass is renamed on the wire too, and a value that does not
fit its type is refused at the border (``TerminalError``) instead of deep inside a step.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from retention.errors import TerminalError

T = TypeVar("T")


_ADAPTERS: dict[object, TypeAdapter[Any]] = {}


def _adapter(cls: Any) -> TypeAdapter[Any]:
    adapter = _ADAPTERS.get(cls)
    if adapter is None:
        adapter = _ADAPTERS[cls] = TypeAdapter(cls)
    return adapter


def to_json(value: object) -> Any:
    """``value`` (a dataclass of ``retention.results``, or a list/tuple/dict of them) as plain JSON data."""
    return _adapter(type(value)).dump_python(value, mode="json")


def from_json(cls: type[T], data: Any) -> T:
    """The JSON ``data`` read back as ``cls``; TerminalError naming the field if it does not fit."""
    try:
        value: T = _adapter(cls).validate_python(data)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "<value>"
        raise TerminalError(f"{cls.__name__}: {where}: {err['msg']}") from None
    return value
