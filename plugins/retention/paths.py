"""Rendering key and path templates safely.

A template such as ``documents/{customer_id}/{id}.pdf`` is filled from one record.
The result must stay inside its bucket or archive root: no absolute path, no ``..``
or ``.`` segment, no empty segment, no empty or missing value, no control character
or backslash. Anything else is refused with ``UnsafeTargetError``.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Any

from retention.errors import UnsafeTargetError

_FORMATTER = string.Formatter()


def placeholders(template: str) -> list[str]:
    """The field names a template uses, in order (``{a}/{b}`` -> ``["a", "b"]``).

    Raises ``UnsafeTargetError`` for format specs, conversions, attribute or index access,
    positional fields and unbalanced braces: only plain ``{name}`` is allowed.
    """
    try:
        fields = list(_FORMATTER.parse(template))
    except ValueError as e:  # unbalanced braces: "Single '}' encountered in format string"
        raise UnsafeTargetError(f"template is malformed: {e}") from None
    names: list[str] = []
    for _literal, name, spec, conversion in fields:
        if name is None:
            continue
        if not name or not name.isidentifier():
            raise UnsafeTargetError(f"placeholder {{{name}}} is not a plain name")
        if spec or conversion:
            raise UnsafeTargetError(f"placeholder {{{name}}} may not carry a format or conversion")
        names.append(name)
    return names


def check_relative(path: str, what: str = "path") -> str:
    """Return ``path`` if it is a safe relative path; raise ``UnsafeTargetError`` otherwise.

    A trailing ``/`` (a prefix: everything under it) is allowed.
    """
    if not path or not path.strip("/"):
        raise UnsafeTargetError(f"{what} is empty")
    if path.startswith("/"):
        raise UnsafeTargetError(f"{what} is absolute")
    if "\\" in path or any(ord(c) < 32 or ord(c) == 127 for c in path):
        raise UnsafeTargetError(f"{what} contains a backslash or control character")
    body = path[:-1] if path.endswith("/") else path
    for seg in body.split("/"):
        if seg in ("", ".", ".."):
            raise UnsafeTargetError(f"{what} has an empty, '.' or '..' segment")
    return path


def render(template: str, record: Mapping[str, Any], what: str = "path") -> str:
    """Fill ``template`` from ``record`` exactly as stored and check the result with ``check_relative``.

    A value is never normalised: one that is empty or padded with whitespace is refused
    (``UnsafeTargetError``), because erasing the stripped key would erase another object.
    """
    values: dict[str, str] = {}
    for name in placeholders(template):
        value = record.get(name)
        text = "" if value is None else str(value)
        if not text:
            raise UnsafeTargetError(f"{what}: placeholder {{{name}}} has no value")
        if text != text.strip():
            raise UnsafeTargetError(f"{what}: placeholder {{{name}}} is padded with whitespace")
        values[name] = text
    return check_relative(template.format(**values), what)


def fixed_part(template: str) -> str:
    """A location's root: the template's text before its first placeholder, cut back to the last ``/``
    (``documents/`` of ``documents/{customer_id}/{id}.pdf``; "" for ``{s3_key}``)."""
    head = template.split("{", 1)[0]
    return head[: head.rfind("/") + 1]


def is_prefix(template: str) -> bool:
    """A template ending in ``/`` names everything under a prefix, not one key/file."""
    return template.endswith("/")


def parses(template: str, text: str) -> list[dict[str, str]]:
    """Every assignment of the template's placeholders that renders exactly ``text``.

    The inverse of ``render``: which record values could have named this key or path. Usually
    one, but values may contain the literal text between placeholders (``{a}-{b}`` and
    ``x-y-z``), so every split is returned; none when ``text`` does not fit the template.
    A placeholder used twice must have the same value both times.
    """
    parts = [(literal, name) for literal, name, _spec, _conv in _FORMATTER.parse(template)]
    found: list[dict[str, str]] = []

    def walk(i: int, at: int, values: dict[str, str]) -> None:
        if i == len(parts):
            if at == len(text):
                found.append(values)
            return
        literal, name = parts[i]
        if not text.startswith(literal, at):
            return
        at += len(literal)
        if name is None:
            walk(i + 1, at, values)
            return
        following = parts[i + 1][0] if i + 1 < len(parts) else None
        for end in range(at + 1, len(text) + 1):
            if following is None and end != len(text):
                continue
            if following and not text.startswith(following, end):
                continue
            value = text[at:end]
            if values.get(name, value) == value:
                walk(i + 1, end, {**values, name: value})

    walk(0, 0, {})
    return found


def naming_prefixes(key: str) -> list[str]:
    """The ``/``-terminated prefixes of ``key``: what a directory template could have rendered to name it."""
    return [key[: i + 1] for i, ch in enumerate(key) if ch == "/"]
