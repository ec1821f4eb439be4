"""The second reference world: a web shop whose customers are text customer numbers (``KN-0042-B``).

Its schema (``tests/fixtures/shop_world/schema.sql``) is shaped unlike Alles-klar's: addresses are
rows of their own, referenced from customers (home) and from orders (shipping, NULL for a pickup);
two customers may share a home, an order may ship to another customer's home; order lines have no
date (dated through their order; NULL order: still in the basket); customer notes have no date at
all; invoices reference orders (NULL: an invoice without one) and are kept by law; gift cards a
customer bought may be redeemed on someone else's order. Files: every version of an order's
confirmation in S3 (some keys end in a delete marker), invoice PDFs and a folder per customer in the
SFTP archive, and files no policy names beside them.

``plan(seed, now)`` decides every row, object version and file up front (a seeded PRNG: a fixed
seed and ``now`` give the identical world); every date lies in an age band at least three weeks
from each retention cutoff, so no reading of a period's edges can change an outcome. A few
customers are set up by hand for the cases that matter (``Story``: what must happen to one row
and why); the rest are drawn at random from the personas. ``generate`` writes the plan into
PostgreSQL, a versioned S3 bucket and the archive. ``harness.shop_oracle`` says what the runs
must leave behind.
"""

from __future__ import annotations

import posixpath
import random
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, NamedTuple

import sqlalchemy as sa
from sqlalchemy import Engine

from harness import world_text as words
from harness.world_rules import COPENHAGEN, NOW

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "shop_world"
POLICY_DIR = FIXTURE / "policies"
POLICY_BUCKET = "shop-documents"
"""The bucket the policies name; a test maps it to a real one."""

TABLES: dict[str, tuple[str, ...]] = {
    "addresses": tuple("id recipient street postcode city country".split()),
    "customers": tuple(
        "customer_no name email phone address_id delivery_note created_at last_activity_at".split()
    ),
    "customer_notes": tuple("id customer_no topic note".split()),
    "gift_cards": tuple("id code buyer_customer_no recipient_name message amount".split()),
    "orders": tuple("id customer_no shipping_address_id gift_card_id placed_at total".split()),
    "order_lines": tuple("id order_id customer_no product quantity personalisation".split()),
    "invoices": tuple(
        "id invoice_no customer_no order_id invoice_date billing_name billing_address amount".split()
    ),
}
"""Every business table with its columns in order, parents before children; the first is the key."""


class ForeignKey(NamedTuple):
    table: str
    column: str
    parent: str
    parent_column: str


FOREIGN_KEYS: tuple[ForeignKey, ...] = (
    ForeignKey("customers", "address_id", "addresses", "id"),
    ForeignKey("customer_notes", "customer_no", "customers", "customer_no"),
    ForeignKey("gift_cards", "buyer_customer_no", "customers", "customer_no"),
    ForeignKey("orders", "customer_no", "customers", "customer_no"),
    ForeignKey("orders", "shipping_address_id", "addresses", "id"),
    ForeignKey("orders", "gift_card_id", "gift_cards", "id"),
    ForeignKey("order_lines", "order_id", "orders", "id"),
    ForeignKey("order_lines", "customer_no", "customers", "customer_no"),
    ForeignKey("invoices", "customer_no", "customers", "customer_no"),
    ForeignKey("invoices", "order_id", "orders", "id"),
)
"""The schema's foreign keys (``schema.sql``), for the oracle."""

Band = tuple[int, int]
"""An age in days before ``now``. The cutoffs lie at 2, 3 and 5 years (730, 1096, 1826 days) and
at the turns of the year five years back (invoices); each band keeps three weeks from them."""
RECENT: Band = (5, 600)
MID: Band = (760, 1060)
"""Two to three years: an order's lines are due, the order is not."""
OLD: Band = (1130, 1790)
"""Three to five years: orders and delivery data are due; their invoices (2021-2023) are not."""
ANCIENT: Band = (1860, 3200)
"""Over five years: everything due but some invoices of early 2021."""
LONG_AGO: Band = (2200, 3200)
"""Before mid-2020: invoices of that year are due too."""
BANDS = (RECENT, MID, OLD, ANCIENT)
PERSONAS: dict[str, Band] = {"active": RECENT, "between": MID, "lapsed": OLD, "dormant": ANCIENT}
"""The random personas: when a customer was last active; their orders are as old or older."""

Outcome = Literal["deleted", "anonymised", "unchanged"]
Mode = Literal["nightly", "request"]
HOLD_REASON = "Verserende retssag, bevaringspligt (sag RS-0007)"


@dataclass(frozen=True)
class Story:
    """A hand-set case: what the nightly run or the erasure request must do to one row, and why."""

    mode: Mode
    table: str
    key: Any
    outcome: Outcome
    why: str


@dataclass
class ShopWorld:
    """Everything the generator put in the stores; ``objects`` gains its version ids when written."""

    now: datetime
    rows: dict[str, dict[Any, dict[str, Any]]]
    documents: dict[str, list[bytes | None]]
    """S3 key -> its versions oldest first (None: a delete marker)."""
    archive: dict[str, bytes]
    """Archive path (relative to the root) -> content."""
    held: frozenset[str]
    subject: str
    """The customer whose erasure the tests request."""
    personas: dict[str, str]
    stories: list[Story]
    objects: dict[str, list[tuple[str, bool]]] = field(default_factory=dict)
    """S3 key -> (version id, is delete marker), oldest first, as written."""


class _Builder:
    """Adds rows one at a time; every choice comes from the one seeded PRNG, in a fixed order."""

    def __init__(self, seed: int, now: datetime) -> None:
        # Reproducible test data, not secrets: a seeded PRNG is exactly what is wanted.
        self.rng = random.Random(f"shop-world:{seed}")  # noqa: S311
        self.now = now
        self.rows: dict[str, dict[Any, dict[str, Any]]] = {t: {} for t in TABLES}
        self.documents: dict[str, list[bytes | None]] = {}
        self.archive: dict[str, bytes] = {}
        self.personas: dict[str, str] = {}
        self.stories: list[Story] = []
        self.held: set[str] = set()
        self._next = {t: 1000 if t == "orders" else 1 for t in TABLES}
        names = [(f, m, la) for f in words.FIRST_NAMES for m in words.MIDDLE_NAMES for la in words.LAST_NAMES]
        self._names = iter(self.rng.sample(names, 200))

    def expect(self, mode: Mode, table: str, key: Any, outcome: Outcome, why: str) -> None:
        self.stories.append(Story(mode, table, key, outcome, why))

    def _add(self, table: str, **values: Any) -> Any:
        key = values.get(TABLES[table][0])
        if key is None:
            key = self._next[table]
            self._next[table] += 1
        row = {c: values.get(c) for c in TABLES[table]}
        row[TABLES[table][0]] = key
        self.rows[table][key] = row
        return key

    def at(self, band: Band) -> datetime:
        """A moment ``band`` days before now, to the second."""
        moment = self.now - timedelta(days=self.rng.uniform(*band))
        return moment.replace(microsecond=0)

    def address(self, recipient: str | None) -> int:
        postcode, city = self.rng.choice(words.CITIES)
        street = f"{self.rng.choice(words.STREETS)} {self.rng.randint(1, 120)}"
        return int(
            self._add(
                "addresses", recipient=recipient, street=street, postcode=postcode, city=city, country="DK"
            )
        )

    def customer(self, persona: str, band: Band | None, *, home: bool = True) -> str:
        """A customer last active ``band`` ago (None: never recorded), with a home address if ``home``."""
        n = len(self.rows["customers"])
        no = f"KN-{1003 + 37 * n:04d}-{'ABCDEFGHJKLMNPRSTUVWXYZ'[(7 * n) % 23]}"
        first, middle, last = next(self._names)
        name = f"{first} {middle} {last}"
        mail = "".join(ch for ch in f"{first}.{last}".lower() if ch.isascii())
        active = self.at(band) if band else None
        digits = [self.rng.randint(20, 99), self.rng.randint(10, 99), self.rng.randint(10, 99)]
        self._add(
            "customers",
            customer_no=no,
            name=name,
            email=f"{mail}{n}@{self.rng.choice(words.E_MAIL_DOMAINS)}",
            phone="+45 {} {} {} 0{}".format(*digits, n % 10),
            address_id=self.address(name) if home else None,
            delivery_note=self.rng.choice(["Stil pakken ved bagdøren", "Ring på hos naboen", None]),
            created_at=(active or self.at(ANCIENT)) - timedelta(days=self.rng.randint(30, 900)),
            last_activity_at=active,
        )
        self.personas[no] = persona
        return no

    def home(self, no: str) -> int:
        return int(self.rows["customers"][no]["address_id"])

    def share_home(self, no: str, with_no: str) -> int:
        """``no`` moves in with ``with_no`` (their own new home row was never used: it goes)."""
        del self.rows["addresses"][self.home(no)]
        self.rows["customers"][no]["address_id"] = self.home(with_no)
        return self.home(with_no)

    def order(
        self,
        no: str,
        band: Band,
        *,
        ship: int | None | Literal["home", "new"] = "home",
        invoice: bool = True,
        gift_card: int | None = None,
        document: list[bytes | None] | Literal["random"] | None = "random",
        lines: int | None = None,
    ) -> int:
        """An order ``band`` ago with its lines, invoice (and PDF), confirmation document and ship-to."""
        customer = self.rows["customers"][no]
        if ship == "home":
            ship = customer["address_id"]
        elif ship == "new":
            ship = self.address(customer["name"])
        placed = self.at(band)
        if customer["last_activity_at"] is not None and placed > customer["last_activity_at"]:
            customer["last_activity_at"] = placed  # in the same band: its margins hold
        total = Decimal(self.rng.randrange(9_900, 250_000)).scaleb(-2)
        oid = self._add(
            "orders",
            customer_no=no,
            shipping_address_id=ship,
            gift_card_id=gift_card,
            placed_at=placed,
            total=total,
        )
        for _ in range(self.rng.randint(1, 3) if lines is None else lines):
            self.line(no, oid)
        if invoice:
            self.invoice(no, placed.astimezone(COPENHAGEN).date(), oid, total)
        if document == "random":
            document = self._versions(f"Ordrebekræftelse {oid} til {customer['name']}")
        if document is not None:
            self.documents[f"orders/{no}/{oid}.pdf"] = document
        return int(oid)

    def _versions(self, text: str) -> list[bytes | None] | None:
        if self.rng.random() < 0.15:
            return None  # no confirmation was ever stored
        bodies: list[bytes | None] = [f"{text}, version {v}".encode() for v in range(self.rng.randint(1, 3))]
        return [*bodies, None] if self.rng.random() < 0.3 else bodies

    def line(self, no: str, order_id: int | None) -> int:
        product = self.rng.choice(["Krus med navn", "Graveret pen", "Fotobog", "Navneskilt", "Plakat"])
        first = self.rows["customers"][no]["name"].split()[0]
        personal = self.rng.choice([f"Til {first}: tillykke!", f"Gravering: {first}", None])
        return int(
            self._add(
                "order_lines",
                order_id=order_id,
                customer_no=no,
                product=product,
                quantity=self.rng.randint(1, 4),
                personalisation=personal,
            )
        )

    def invoice(self, no: str, day: date, order_id: int | None, amount: Decimal) -> int:
        customer = self.rows["customers"][no]
        address = self.rows["addresses"].get(customer["address_id"])
        billing = f"{address['street']}, {address['postcode']} {address['city']}" if address else None
        invoice_no = f"F{day.year}-{len(self.rows['invoices']) + 1:04d}"
        iid = self._add(
            "invoices",
            invoice_no=invoice_no,
            customer_no=no,
            order_id=order_id,
            invoice_date=day,
            billing_name=customer["name"],
            billing_address=billing,
            amount=amount,
        )
        if self.rng.random() < 0.85:
            self.archive[f"invoices/{invoice_no}.pdf"] = f"Faktura {invoice_no}: {customer['name']}".encode()
        return int(iid)

    def note(self, no: str) -> int:
        topic, note = self.rng.choice(
            [("præference", "Vil kun kontaktes pr. e-mail"), ("klage", "Klagede over forsinket levering")]
        )
        return int(self._add("customer_notes", customer_no=no, topic=topic, note=note))

    def gift_card(self, buyer: str, recipient: str) -> int:
        gid = len(self.rows["gift_cards"]) + 1
        return int(
            self._add(
                "gift_cards",
                code=f"GC-{gid:03d}-{self.rng.choice('QRSTUVWXYZ')}",
                buyer_customer_no=buyer,
                recipient_name=recipient,
                message=f"Kærlig hilsen {self.rows['customers'][buyer]['name'].split()[0]}",
                amount=Decimal(self.rng.choice([100, 250, 500])),
            )
        )

    def folder(self, no: str) -> None:
        """The customer's archive folder: a welcome letter, maybe letters and an ID scan."""
        name = self.rows["customers"][no]["name"]
        self.archive[f"customers/{no}/welcome.txt"] = f"Velkommen, {name}".encode()
        if self.rng.random() < 0.5:
            day = self.at(RECENT).date().isoformat()
            self.archive[f"customers/{no}/letters/{day}.txt"] = f"Kære {name}".encode()
        if self.rng.random() < 0.3:
            self.archive[f"customers/{no}/id-scan.pdf"] = f"ID: {name}".encode()

    def world(self, subject: str) -> ShopWorld:
        return ShopWorld(
            now=self.now,
            rows=self.rows,
            documents=self.documents,
            archive=self.archive,
            held=frozenset(self.held),
            subject=subject,
            personas=self.personas,
            stories=self.stories,
        )


def plan(seed: int = 11, now: datetime = NOW) -> ShopWorld:
    """The whole world, decided up front: the hand-set cases first, then random customers."""
    b = _Builder(seed, now)
    subject = _the_subject(b)
    _shared_homes(b)
    _orders_and_cards(b)
    for n in range(14):
        persona = ("active", "between", "lapsed", "dormant")[n % 4]
        _random_customer(b, persona)
    for no in b.rows["customers"]:
        if b.rng.random() < 0.7 and not b.archive.get(f"customers/{no}/welcome.txt"):
            b.folder(no)
    b.archive["customers/README.txt"] = b"One folder per customer number."
    b.archive["customers/KN-9990-Z/old.txt"] = b"A folder no customer row names."
    b.archive["templates/letterhead.txt"] = b"Web shop letterhead"
    b.documents["catalogue/2026/spring.pdf"] = [b"catalogue draft", b"catalogue"]
    b.documents["orders/README.txt"] = [b"Order confirmations, one key per order."]
    world = b.world(subject)
    _check_margins(world)
    return world


def _check_margins(world: ShopWorld) -> None:
    """Refuse a world with a timestamp within three weeks of a cutoff (2, 3 or 5 years back)."""
    for table, column in (("customers", "last_activity_at"), ("orders", "placed_at")):
        for row in world.rows[table].values():
            for years in (2, 3, 5):
                cutoff = world.now.replace(year=world.now.year - years)
                if row[column] is not None and abs(row[column] - cutoff) < timedelta(days=21):
                    raise ValueError(f"{table}.{column} of {row[TABLES[table][0]]} is too close to a cutoff")


def _the_subject(b: _Builder) -> str:
    """The customer whose erasure the tests request, and the neighbours their data touches."""
    x = b.customer("subject", RECENT)
    b.rows["customers"][x]["delivery_note"] = "Pakken må stilles i carporten"
    y = b.customer("active", RECENT)
    z = b.customer("active", RECENT)
    home = b.share_home(y, x)
    b.expect("request", "addresses", home, "unchanged", "the subject's home is also another customer's home")
    b.expect("nightly", "addresses", home, "unchanged", "two active customers live there")
    pickup = b.order(x, RECENT, ship=None, invoice=False, document=[b"paid at pickup", b"picked up"])
    b.expect("request", "orders", pickup, "deleted", "a pickup order (no shipping address) of the subject")
    work = b.address("Kontoret, 3. sal")
    kept = b.order(x, OLD, ship=work, document=[b"confirmed", b"changed", b"cancelled line", None])
    b.order(z, RECENT, ship=work)
    b.expect("request", "orders", kept, "unchanged", "an invoice the law keeps still references it")
    b.expect("request", "addresses", work, "unchanged", "another customer's order ships there too")
    b.expect("nightly", "orders", kept, "unchanged", "due, but an invoice not yet due references it")
    old = b.order(x, LONG_AGO, document=[b"confirmation"])
    b.expect("request", "orders", old, "deleted", "its invoice is due and goes first")
    b.expect("nightly", "orders", old, "deleted", "placed over five years ago, its invoice is due")
    fee = b.invoice(x, b.at(RECENT).astimezone(COPENHAGEN).date(), None, Decimal("49.00"))
    b.expect("request", "invoices", fee, "unchanged", "an invoice without an order, kept by law")
    basket = b.line(x, None)
    b.expect("request", "order_lines", basket, "deleted", "a basket line (no order) of the subject")
    b.expect("nightly", "order_lines", basket, "unchanged", "a basket line has no order: never due")
    for _ in range(2):
        note = b.note(x)
    b.expect("request", "customer_notes", note, "deleted", "notes go on request")
    b.expect("nightly", "customer_notes", note, "unchanged", "notes have no date: only a request erases them")
    given = b.gift_card(x, b.rows["customers"][y]["name"])
    b.order(y, RECENT, gift_card=given)
    b.expect("request", "gift_cards", given, "anonymised", "another customer's order redeemed it")
    unused = b.gift_card(x, "Mormor")
    b.expect("request", "gift_cards", unused, "deleted", "never redeemed")
    b.expect("request", "customers", x, "anonymised", "the subject's own row stays, anonymised")
    b.folder(x)
    return x


def _shared_homes(b: _Builder) -> None:
    """Homes two customers share, with a dormant, active or held partner; a legal hold."""
    dormant, active = b.customer("dormant", ANCIENT), b.customer("active", RECENT)
    home = b.share_home(dormant, active)
    b.expect("nightly", "addresses", home, "unchanged", "an active customer still lives there")
    card = b.gift_card(dormant, b.rows["customers"][active]["name"])
    b.order(active, RECENT, gift_card=card)
    b.expect("nightly", "gift_cards", card, "anonymised", "an active customer's order redeemed it")
    b.expect("nightly", "customers", dormant, "anonymised", "inactive for over five years")
    first, second = b.customer("dormant", ANCIENT), b.customer("dormant", ANCIENT)
    home = b.share_home(second, first)
    b.expect("nightly", "addresses", home, "anonymised", "both who live there are due")
    unused = b.gift_card(first, "Lillebror")
    b.expect("nightly", "gift_cards", unused, "deleted", "bought by a dormant customer, never redeemed")
    own = b.gift_card(second, "mig selv")
    gone = b.order(second, LONG_AGO, gift_card=own)
    b.expect("nightly", "orders", gone, "deleted", "due, its invoice too")
    b.expect("nightly", "gift_cards", own, "deleted", "the order that redeemed it was deleted first")
    held, neighbour = b.customer("held", ANCIENT), b.customer("dormant", ANCIENT)
    b.held.add(held)
    home = b.share_home(neighbour, held)
    b.order(held, LONG_AGO)
    b.order(held, ANCIENT, ship="new")
    b.note(held)
    b.folder(held)
    b.expect("nightly", "addresses", home, "unchanged", "the other one living there is under a legal hold")
    b.expect("nightly", "customers", held, "unchanged", "under a legal hold")


def _orders_and_cards(b: _Builder) -> None:
    """Shipping addresses shared between customers, own homes as ship-to, lapsed and legacy customers."""
    active = b.customer("active", RECENT)
    gift = b.customer("dormant", ANCIENT)
    order = b.order(gift, LONG_AGO, ship=b.home(active))
    b.expect("nightly", "orders", order, "deleted", "placed over five years ago")
    b.expect("nightly", "addresses", b.home(active), "unchanged", "it is an active customer's home")
    office = b.address("Lager og kontor")
    dormant, colleague = b.customer("dormant", ANCIENT), b.customer("active", RECENT)
    b.order(dormant, ANCIENT, ship=office)
    b.order(colleague, RECENT, ship=office)
    b.expect("nightly", "addresses", office, "unchanged", "an order not due ships there too")
    own = b.customer("dormant", ANCIENT)
    b.order(own, LONG_AGO, ship="home")
    b.expect("nightly", "addresses", b.home(own), "anonymised", "home and ship-to of one dormant customer")
    lapsed = b.customer("lapsed", OLD)
    b.rows["customers"][lapsed]["delivery_note"] = "Aflever i pakkeboksen"
    kept = b.order(lapsed, OLD, ship="new", document=[b"confirmation", b"corrected", None])
    b.expect("nightly", "orders", kept, "unchanged", "an invoice not yet due references it")
    ship = b.rows["orders"][kept]["shipping_address_id"]
    b.expect("nightly", "addresses", ship, "anonymised", "the lapsed customer's delivery data is due")
    b.expect("nightly", "customers", lapsed, "anonymised", "delivery data due (3 years), not the master data")
    home_too = b.customer("lapsed", OLD)
    b.order(home_too, OLD, ship="home", document=[b"confirmation", None])
    b.expect("nightly", "addresses", b.home(home_too), "unchanged", "the customer's own row refers to it")
    legacy = b.customer("legacy", None, home=False)
    order = b.order(legacy, LONG_AGO, ship=None)
    b.expect("nightly", "orders", order, "deleted", "placed long ago; its customer has no activity date")
    b.expect("nightly", "customers", legacy, "unchanged", "no activity date: never due")
    b.customer("fresh", None, home=False)
    basket = b.customer("dormant", ANCIENT)
    line = b.line(basket, None)
    b.expect("nightly", "order_lines", line, "unchanged", "a basket line has no order: never due")
    between = b.customer("between", MID)
    order = b.order(between, MID, lines=2)
    b.expect("nightly", "orders", order, "unchanged", "placed two to three years ago")
    line = max(k for k, r in b.rows["order_lines"].items() if r["order_id"] == order)
    b.expect("nightly", "order_lines", line, "deleted", "its order was placed over two years ago")


def _random_customer(b: _Builder, persona: str) -> None:
    band = PERSONAS[persona]
    no = b.customer(persona, band, home=b.rng.random() < 0.85)
    older = BANDS[BANDS.index(band) :]
    for _ in range(b.rng.randint(0, 3)):
        ships: list[int | None | Literal["home", "new"]] = ["home", "home", "new", None]
        ship = b.rng.choice(ships)
        b.order(no, b.rng.choice(older), ship=ship, invoice=b.rng.random() < 0.8)
    if b.rng.random() < 0.4:
        b.note(no)
    if b.rng.random() < 0.2:
        b.gift_card(no, "En ven")


def generate(
    engine: Engine,
    *,
    s3_client: Any,
    bucket: str,
    sftp_client: Any,
    archive_root: str,
    seed: int = 11,
    now: datetime = NOW,
) -> ShopWorld:
    """Create the schema in an empty PostgreSQL database and write the planned world into it, the
    (existing) bucket, made versioned, and the archive root; the world's ``objects`` get their version ids."""
    world = plan(seed, now)
    _write_database(engine, world)
    _write_objects(s3_client, bucket, world)
    _write_archive(sftp_client, archive_root, world)
    return world


def _write_database(engine: Engine, world: ShopWorld) -> None:
    statements = [s for s in (FIXTURE / "schema.sql").read_text().split(";") if s.strip()]
    with engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)
        meta = sa.MetaData()
        meta.reflect(conn)
        for table, rows in world.rows.items():
            if rows:
                conn.execute(meta.tables[table].insert(), list(rows.values()))


def _write_objects(s3_client: Any, bucket: str, world: ShopWorld) -> None:
    s3_client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    for key, versions in world.documents.items():
        written = world.objects.setdefault(key, [])
        for body in versions:
            if body is None:
                marker = s3_client.delete_object(Bucket=bucket, Key=key)
                written.append((marker["VersionId"], True))
            else:
                put = s3_client.put_object(Bucket=bucket, Key=key, Body=body)
                written.append((put["VersionId"], False))


def _write_archive(sftp_client: Any, archive_root: str, world: ShopWorld) -> None:
    made: set[str] = {archive_root}
    for rel, content in world.archive.items():
        path = posixpath.join(archive_root, rel)
        missing: list[str] = []
        directory = posixpath.dirname(path)
        while directory not in made:
            missing.append(directory)
            directory = posixpath.dirname(directory)
        for d in reversed(missing):
            sftp_client.mkdir(d)
            made.add(d)
        with sftp_client.open(path, "wb") as f:
            f.write(content)
