"""Customer and contact identities of the reference world, derived from the seed and an id alone.

Random access (no state but the seed): the generator writes them into rows and documents,
and the ``World`` hands a customer's out as canaries to search for after an erasure.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

from harness import world_text as words

NAME_SPACE = len(words.FIRST_NAMES) * len(words.MIDDLE_NAMES) * len(words.LAST_NAMES)
_NAME_STEP = 7919
"""Coprime with ``NAME_SPACE``, so ids map to distinct name combinations."""
_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
_CODE_SPACE = len(_CODE_ALPHABET) ** 6
_CODE_STEP = 1_000_003
_PHONE_SPACE = 30_000_000
_PHONE_STEP = 7919
_TRANSLITERATION = str.maketrans({"æ": "ae", "ø": "oe", "å": "aa", " ": "-", "'": ""})


class Persona(NamedTuple):
    """One identity: name, e-mail, phone, address and (customers only) a distinctive phrase."""

    name: str
    email: str
    phone: str
    address: str
    phrase: str


def _mix(*parts: object) -> int:
    """A stable 64-bit hash (independent of PYTHONHASHSEED)."""
    return int.from_bytes(hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest(), "big")


def _ascii(word: str) -> str:
    return word.lower().translate(_TRANSLITERATION)


def _phone(base: int, n: int, offset: int) -> str:
    digits = str(base + (n * _PHONE_STEP + offset) % _PHONE_SPACE)
    return f"+45 {digits[0:2]} {digits[2:4]} {digits[4:6]} {digits[6:8]}"


def _address(h: int) -> str:
    postcode, city = words.CITIES[h % len(words.CITIES)]
    street = words.STREETS[(h >> 8) % len(words.STREETS)]
    return f"{street} {(h >> 16) % 120 + 1}, {postcode} {city}"


class Personas:
    """Customer and contact identities, derived from the seed and the id alone (random access)."""

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._name_offset = _mix(seed, "names") % NAME_SPACE
        self._code_offset = _mix(seed, "codes") % _CODE_SPACE
        self._phone_offset = _mix(seed, "phones") % _PHONE_SPACE

    def customer(self, customer_id: int) -> Persona:
        idx = (customer_id * _NAME_STEP + self._name_offset) % NAME_SPACE
        nf, nm = len(words.FIRST_NAMES), len(words.MIDDLE_NAMES)
        parts = (
            words.FIRST_NAMES[idx % nf],
            words.MIDDLE_NAMES[idx // nf % nm],
            words.LAST_NAMES[idx // (nf * nm)],
        )
        h = _mix(self._seed, "customer", customer_id)
        domain = words.E_MAIL_DOMAINS[h % len(words.E_MAIL_DOMAINS)]
        phrase = (
            f"{words.SECRET_ADJECTIVES[(h >> 24) % len(words.SECRET_ADJECTIVES)]} "
            f"{words.SECRET_NOUNS[(h >> 32) % len(words.SECRET_NOUNS)]} (kode {self._code(customer_id)})"
        )
        return Persona(
            name=" ".join(parts),
            email=f"{'.'.join(_ascii(p) for p in parts)}.{customer_id}@{domain}",
            phone=_phone(20_000_000, customer_id, self._phone_offset),
            address=_address(h >> 4),
            phrase=phrase,
        )

    def contact(self, contact_id: int) -> tuple[str, str, str]:
        """Name, e-mail and phone of a contact person (a two-part name: never a customer canary)."""
        h = _mix(self._seed, "contact", contact_id)
        first = words.FIRST_NAMES[h % len(words.FIRST_NAMES)]
        last = words.LAST_NAMES[(h >> 8) % len(words.LAST_NAMES)]
        email = f"{_ascii(first)}.{_ascii(last)}.k{contact_id}@{words.E_MAIL_DOMAINS[(h >> 16) % 4]}"
        return f"{first} {last}", email, _phone(50_000_000, contact_id, self._phone_offset)

    def _code(self, customer_id: int) -> str:
        n = (customer_id * _CODE_STEP + self._code_offset) % _CODE_SPACE
        chars = []
        for _ in range(6):
            n, r = divmod(n, len(_CODE_ALPHABET))
            chars.append(_CODE_ALPHABET[r])
        return "".join(chars)
