"""What looks personal, for the coverage report (``retention.coverage``): names and values.

Names: a table or column name is split into lower-case words (``customer_email``, ``kundeEmail``
and ``e-mail`` alike) and compared with the English and Danish words for names, e-mail addresses,
phone numbers, addresses, CPR numbers and dates of birth (``navn``, ``fornavn``, ``efternavn``,
``telefon``, ``tlf``, ``mobil``, ``adresse``, ``vej``, ``postnr``, ``personnummer``,
``fødselsdato`` ...). A name whose last word says it holds something about the value rather than
the value (``email_status``, ``address_id``, ``phone_type``) does not count, nor does a name of a
thing (``filename``, ``filnavn``, ``hostname``, ``firmanavn``).

Values: e-mail addresses; Danish phone numbers (the Danish numbering plan: eight digits, the
first 2 to 9), written ``+45``/``0045`` and eight digits, grouped ``22 33 44 55`` / ``2233 4455``
or after ``tlf.``/``telefon``/``mobil`` anywhere, or a value that is just eight digits and does not
read as a date ``YYYYMMDD`` (an order number such as ``ORD-2024-00017``, ``10023456`` or
``20240117`` is not one); CPR numbers (``DDMMYY-XXXX`` anywhere, or a value of just those ten
digits, with a real day and month). Nothing here keeps or returns a value: only which patterns
matched.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Sequence

NAME = "a person's name"
EMAIL = "an e-mail address"
PHONE = "a phone number"
ADDRESS = "an address"
CPR = "a CPR number"
BIRTH_DATE = "a date of birth"

VALUE_PATTERNS: tuple[str, ...] = ("e-mail", "phone", "CPR")
"""The value patterns, in report order."""

_CAMEL = re.compile(r"(?<=[a-zæøå0-9])(?=[A-ZÆØÅ])")
_WORD_SPLIT = re.compile(r"[^0-9a-zæøåé]+")
_TRAILING_DIGITS = re.compile(r"\d+$")

_CPR_WORDS = re.compile(r"cpr(?:nr|no|nummer|number)?|person(?:nr|nummer)|ssn|socialsecurity\w*")
_BIRTH_WORDS = re.compile(r"(?:fødsels?|foedsels?|fodsels?)(?:dato|dag|år|aar)?|født|foedt|birth\w*|dob")
_EMAIL_WORDS = re.compile(r"\w*mails?|e?mail(?:adresser?|address|addr)")
_PHONE_WORDS = re.compile(
    r"\w*(?:phone|telefon|tlf)(?:nr|no|nummer|number)?|tel|mobil(?:e|nr|no|nummer|number|tlf|telefon)?"
    r"|cell|fax(?:nr)?"
)
_ADDRESS_WORDS = re.compile(
    r"\w*(?:adresser?|address|addresse)|addr|street\w*|\w*vej|vejnavn|postnr|postnummer|postal\w*"
    r"|postcode|zip(?:code)?|husnr|husnummer|etage"
)
_NAME_WORDS = re.compile(r"(?P<qualifier>\w*?)(?:names?|navne?)")
_PHRASES: tuple[tuple[str, str], ...] = (
    ("dateofbirth", BIRTH_DATE),
    ("socialsecurity", CPR),
    ("email", EMAIL),
    ("phonenumber", PHONE),
)
"""Words that a name may split (``date_of_birth``, ``e_mail``), looked for in the joined name."""

_THINGS = frozenset(
    {
        "re", "file", "fil", "host", "vært", "vaert", "table", "tabel", "bucket", "schema", "skema",
        "column", "kolonne", "domain", "domæne", "domaene", "server", "product", "produkt",
        "category", "kategori", "event", "job", "task", "opgave", "queue", "key", "field", "felt",
        "type", "class", "klasse", "brand", "project", "projekt", "role", "rolle", "language",
        "sprog", "dag", "app", "package", "pakke", "site", "path", "sti", "index", "tag", "company",
        "firma", "virksomhed", "organisation", "org", "city", "by", "country", "land", "region",
        "device", "enhed", "machine", "printer", "sheet", "attribute", "param", "variable",
        "setting", "config", "module", "function", "method", "service", "step", "stage", "status",
        "template", "skabelon", "code", "kode", "bank", "team", "department",
        "afdeling", "shop", "butik", "store", "channel", "kanal", "campaign", "kampagne",
    }
)  # fmt: skip
"""Qualifiers of a name that name a thing, not a person (``filename``, ``firmanavn``, ``bucket_name``)."""

_ABOUT_THE_VALUE = frozenset(
    {
        "id", "ids", "uuid", "key", "fk", "ref", "count", "cnt", "antal", "type", "kind", "status",
        "state", "flag", "verified", "confirmed", "enabled", "sent", "template", "format", "domain",
        "length", "len", "version", "visible", "public", "optin", "opt", "consent", "samtykke",
        "source", "kilde", "provider", "policy", "rule", "regex", "pattern", "label", "mask",
    }
)  # fmt: skip
"""Last words of a column name that hold something about a value, not the value (``email_status``)."""

_PEOPLE_TABLES = re.compile(
    r"(?:person|people|customer|client|user|employee|staff|contact|member|patient|subscriber|signup"
    r"|applicant|candidate|recipient|guest|visitor|interpreter|translator|student|profile)s?"
    r"|\w*(?:kunde|kontakt|medarbejder|ansatte|bruger|medlem|person|abonnent|tilmelding|ansøger"
    r"|modtager|gæst|tolk|oversætter)\w*"
)

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_PHONE_INTL = re.compile(r"(?<![\w+])(?:\+|00)45[ .-]?(?:\d{2}[ .-]?){3}\d{2}(?!\d)")
_PHONE_GROUPED = re.compile(r"(?<![\w+-])(?:[2-9]\d(?: \d{2}){3}|[2-9]\d{3} \d{4})(?![\w-])")
_PHONE_SAID = re.compile(
    r"(?i)(?<!\w)(?:tlf|tel|telefon|phone|mobil|mobile|mob|ring)\.?:?\s*(?:nr\.?:?\s*)?"
    r"[2-9]\d(?:[ .-]?\d{2}){3}(?![\w-])"
)
"""Eight digits that the text says are a phone number (``tlf. 22334455``)."""
_PHONE_ALONE = re.compile(r"[2-9]\d{7}")
_DATE_DIGITS = re.compile(r"(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])")
"""Eight digits that read as a date (``20240117``): an order or batch number, not a phone number."""
_CPR_DASHED = re.compile(r"(?<![\w-])(\d{2})(\d{2})(\d{2})-\d{4}(?![\w-])")
_CPR_ALONE = re.compile(r"(\d{2})(\d{2})(\d{2})\d{4}")


def words(name: str) -> list[str]:
    """The lower-case words of a table or column name (``kundeEmail_2`` -> ``["kunde", "email"]``)."""
    spaced = _CAMEL.sub("_", name).lower()
    found = (_TRAILING_DIGITS.sub("", w) for w in _WORD_SPLIT.split(spaced))
    return [w for w in found if w]


def column_name_kind(name: str, *, allowed: Sequence[str] | None = None) -> str | None:
    """What the column's name says it holds, if personal (``NAME``, ``EMAIL``, ...), else None.

    ``allowed`` limits the kinds to those its type can hold (a date column can hold a date of
    birth, not an e-mail address); None allows every kind.
    """
    found = words(name)
    if not found or found[-1] in _ABOUT_THE_VALUE:
        return None
    for kind in _kinds(found):
        if allowed is None or kind in allowed:
            return kind
    return None


def _kinds(found: Sequence[str]) -> list[str]:
    """Every kind the words name, most specific first."""
    joined = "".join(found)
    kinds = [kind for phrase, kind in _PHRASES if phrase in joined]
    for pattern, kind in (
        (_CPR_WORDS, CPR),
        (_BIRTH_WORDS, BIRTH_DATE),
        (_EMAIL_WORDS, EMAIL),
        (_PHONE_WORDS, PHONE),
        (_ADDRESS_WORDS, ADDRESS),
    ):
        if any(pattern.fullmatch(w) for w in found):
            kinds.append(kind)
    if _names_a_person(found):
        kinds.append(NAME)
    order = (CPR, BIRTH_DATE, EMAIL, PHONE, ADDRESS, NAME)
    return sorted(set(kinds), key=order.index)


def _names_a_person(found: Sequence[str]) -> bool:
    """A word ``...name(s)`` or ``...navn(e)`` whose qualifier (in the word, or the word before) is
    not a thing: ``first_name``, ``efternavn``, ``interpreter_name``; not ``filename``, ``firmanavn``."""
    for i, word in enumerate(found):
        m = _NAME_WORDS.fullmatch(word)
        if m is None:
            continue
        qualifier = m["qualifier"] or (found[i - 1] if i else "")
        if qualifier not in _THINGS and qualifier.removesuffix("s") not in _THINGS:
            return True
    return False


def table_name_looks_personal(name: str) -> bool:
    """The table's name says it holds people (``customers``, ``newsletter_signups``, ``kunder``)."""
    return any(_PEOPLE_TABLES.fullmatch(w) for w in words(name))


def value_patterns(text: str) -> list[str]:
    """Which of ``VALUE_PATTERNS`` the value shows (``"e-mail"``, ``"phone"``, ``"CPR"``); never the value."""
    found: list[str] = []
    if _EMAIL.search(text):
        found.append("e-mail")
    if looks_like_phone(text):
        found.append("phone")
    if looks_like_cpr(text):
        found.append("CPR")
    return found


def looks_like_phone(text: str) -> bool:
    """A Danish phone number: ``+45``/``0045`` and eight digits; eight digits (the first 2 to 9)
    grouped by spaces, or after ``tlf``/``telefon``/``mobil``/``phone``, anywhere; or a value of
    just such eight digits that does not read as a date."""
    if _PHONE_INTL.search(text) or _PHONE_GROUPED.search(text) or _PHONE_SAID.search(text):
        return True
    alone = _PHONE_ALONE.fullmatch(text.strip())
    return alone is not None and not _DATE_DIGITS.fullmatch(alone[0])


def looks_like_cpr(text: str) -> bool:
    """A CPR number with a real day and month: ``DDMMYY-XXXX`` anywhere, or a value of just ten digits."""
    candidates = [m.groups() for m in _CPR_DASHED.finditer(text)]
    alone = _CPR_ALONE.fullmatch(text.strip())
    if alone:
        candidates.append(alone.groups())
    return any(_real_date(*parts) for parts in candidates)


def _real_date(day: str, month: str, year: str) -> bool:
    """DD, MM and YY make a date in 1900-2099 (29 February only in years divisible by four)."""
    d, m = int(day), int(month)
    if not 1 <= m <= 12:
        return False
    return 1 <= d <= calendar.monthrange(2000 + int(year), m)[1]
