"""Synthetic identities: each synthetic person spread over several identifier records, with known truth.

:func:`generate_identities` draws, per person, a name, a birth date, a postcode, e-mail addresses, a phone
number, a loyalty member id, an external account id and devices, then writes ``records`` identity records
per person (``1 + Poisson``, at most 8) from the sources ``web``, ``app``, ``store``, ``crm`` and
``loyalty``. Each source carries each field with its own probability (:data:`FIELD_PRESENCE`), and the
written values carry realistic noise (:class:`IdentityNoise`):

* **formatting** that normalisation undoes: upper/mixed case, stray spaces, accents dropped, Gmail dots
  and ``+tags``, ``googlemail.com``; phones written ``06 12 34 56 78``, ``+33 6 12 ...``, ``0033...``,
  ``+33 (0)6 ...``;
* **errors** it cannot undo: one-character typos in names, e-mail user names and birth dates, the name
  written surname first, a second e-mail address, an older postcode after a move;
* **shared and reused identifiers**: phone numbers recycled from another person, household members
  sharing a device (same surname and postcode), shop tablets whose device id appears on many people's
  store records, placeholder phone numbers such as ``0000000000``;
* **missing fields** (the presence table).

The truth (``record_id -> person_id``) is returned and written next to the records. With
``IdentityNoise.none()`` the identifiers are clean (formatting variants only), for tests of the
deterministic path.

:func:`spread_activity` takes a :func:`features.synth.generate` output and re-keys its customers,
transactions and events by identity record (an order or a session goes to one of its person's records),
so the raw inputs look like a CDP's fragmented profiles and the identity step has something to stitch.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, fields, replace
from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from portrait.files import atomic_path

logger = logging.getLogger(__name__)

SOURCES: tuple[str, ...] = ("web", "app", "store", "crm", "loyalty")
SOURCE_SHARE = np.array([0.30, 0.25, 0.25, 0.10, 0.10])
FIELDS: tuple[str, ...] = (
    "email",
    "phone",
    "member_id",
    "account_id",
    "device_id",
    "name",
    "birth_date",
    "postcode",
)
FIELD_PRESENCE: dict[str, tuple[float, ...]] = {
    # email, phone, member_id, account_id, device_id, name, birth_date, postcode
    "web": (0.97, 0.55, 0.20, 0.30, 0.85, 0.90, 0.25, 0.70),  # login e-mail; phone and address for delivery
    "app": (0.90, 0.45, 0.40, 0.35, 0.98, 0.80, 0.20, 0.40),
    "store": (0.50, 0.80, 0.75, 0.00, 0.00, 0.95, 0.60, 0.85),  # point of sale: card, phone at the till
    "crm": (0.90, 0.80, 0.60, 0.00, 0.00, 1.00, 0.85, 0.90),
    "loyalty": (0.75, 0.75, 1.00, 0.00, 0.00, 0.95, 0.80, 0.85),
}
"""Probability that a record of each source carries each field (before noise)."""

FIRST_NAMES: tuple[str, ...] = (
    "marie", "jean", "pierre", "michel", "anne", "nathalie", "isabelle", "sylvie", "catherine", "philippe",
    "françoise", "nicolas", "christophe", "stéphane", "sophie", "julien", "céline", "thomas", "camille",
    "léa", "manon", "chloé", "hugo", "lucas", "louis", "gabriel", "emma", "inès", "jade", "noah", "hélène",
    "andré", "rené", "josé", "maría", "carmen", "antonio", "manuel", "francisco", "lucía", "javier",
    "carlos", "elena", "pablo", "alejandro", "sofía", "giulia", "marco", "francesca", "alessandro",
    "giuseppe", "chiara", "luca", "matteo", "andrea", "paolo", "giovanni", "anna", "laura", "roberto",
    "hans", "peter", "klaus", "jürgen", "wolfgang", "sabine", "ursula", "stefan", "andreas", "michael",
    "jörg", "katrin", "lukas", "leon", "jonas", "mia", "lena", "hannah", "sven", "jan", "pieter", "daan",
    "sanne", "femke", "bram", "lotte", "sem", "eva", "olivia", "amelia", "george", "harry", "oliver",
    "jack", "charlie", "james", "william", "emily", "sarah", "david", "john", "mary", "elizabeth",
    "margaret", "susan", "robert", "richard", "paul", "mark", "daniel", "matthew", "rachel", "victoria",
    "zoé", "maël", "noé", "élodie", "aurélie", "amélie", "benoît", "jérôme", "frédéric", "sébastien",
)  # fmt: skip
LAST_NAMES: tuple[str, ...] = (
    "martin", "bernard", "dubois", "thomas", "robert", "richard", "petit", "durand", "leroy", "moreau",
    "simon", "laurent", "lefèbvre", "michel", "garcía", "david", "bertrand", "roux", "vincent", "fournier",
    "morel", "girard", "andré", "lefèvre", "mercier", "dupont", "lambert", "bonnet", "françois", "martínez",
    "legrand", "garnier", "faure", "rousseau", "blanc", "guérin", "müller", "henry", "roussel", "nicolas",
    "perrin", "morin", "mathieu", "clément", "gauthier", "dumont", "lopez", "fontaine", "chevalier",
    "robin", "schmidt", "schneider", "fischer", "weber", "meyer", "wagner", "becker", "schulz", "hoffmann",
    "schäfer", "koch", "bauer", "richter", "klein", "wolf", "schröder", "neumann", "schwarz", "zimmermann",
    "braun", "krüger", "hofmann", "hartmann", "lange", "fernández", "gonzález", "rodríguez", "sánchez",
    "pérez", "gómez", "díaz", "hernández", "muñoz", "álvarez", "romero", "alonso", "gutiérrez", "navarro",
    "torres", "domínguez", "vázquez", "ramos", "gil", "ramírez", "rossi", "russo", "ferrari", "esposito",
    "bianchi", "romano", "colombo", "ricci", "marino", "greco", "bruno", "gallo", "conti", "de luca",
    "mancini", "costa", "giordano", "rizzo", "lombardi", "moretti", "de jong", "jansen", "de vries",
    "van den berg", "van dijk", "bakker", "janssen", "visser", "smit", "meijer", "de boer", "mulder",
    "de groot", "bos", "vos", "peters", "hendriks", "van leeuwen", "dekker", "brouwer", "smith", "jones",
    "williams", "taylor", "brown", "davies", "evans", "wilson", "johnson", "roberts", "wright", "walker",
    "thompson", "white", "hughes", "edwards", "green", "hall", "wood", "harris", "lewis", "martín", "jackson",
    "clarke", "clark", "turner", "hill", "scott", "cooper", "morris", "ward", "moore", "king", "watson",
    "baker", "harrison", "morgan", "patel", "young", "allen", "mitchell", "james", "anderson", "phillips",
    "lee", "bell", "parker", "davis", "gauthier-roy", "le gall", "le roux", "caron", "barbier", "arnaud",
    "renaud", "giraud", "brun", "roche", "roy", "noël", "meunier", "boyer", "jacquet", "colin", "lucas",
    "brunet", "hubert", "vidal", "lemaire", "leclerc", "picard", "aubert", "marchand", "duval", "denis",
)  # fmt: skip
EMAIL_DOMAINS: tuple[str, ...] = (
    "gmail.com", "yahoo.fr", "hotmail.com", "outlook.com", "orange.fr", "free.fr", "web.de", "gmx.de",
    "libero.it", "icloud.com", "hotmail.co.uk", "yahoo.es", "ziggo.nl", "laposte.net",
)  # fmt: skip
EMAIL_DOMAIN_SHARE = np.array(
    [0.32, 0.07, 0.09, 0.08, 0.08, 0.05, 0.05, 0.04, 0.04, 0.06, 0.03, 0.03, 0.03, 0.03]
)
REGIONS: tuple[str, ...] = ("FR", "DE", "ES", "IT", "NL", "UK")
CALLING_CODE = {"FR": "33", "DE": "49", "ES": "34", "IT": "39", "NL": "31", "UK": "44"}
MOBILE_PREFIX = {"FR": ("6", "7"), "DE": ("151", "160", "170", "176"), "ES": ("6",), "IT": ("3",),
                 "NL": ("6",), "UK": ("7",)}  # fmt: skip
NATIONAL_LENGTH = {"FR": 9, "DE": 11, "ES": 9, "IT": 10, "NL": 9, "UK": 10}
PLACEHOLDER_PHONES: tuple[str, ...] = ("0000000000", "00 00 00 00 00", "0600000000", "+33 6 00 00 00 00")
GMAIL_TAGS: tuple[str, ...] = ("shop", "promo", "news", "orders", "spam")
TRUTH_SCHEMA = pa.schema([("record_id", pa.string()), ("person_id", pa.string())])


@dataclass(frozen=True)
class IdentityNoise:
    """Noise rates (probabilities) of :func:`generate_identities`. Formatting variants are always on."""

    name_typo: float = 0.04
    """Per record with a name: one character substituted, dropped or swapped in the first or last name."""
    name_swapped: float = 0.02
    """Per record with a name: written surname first."""
    email_typo: float = 0.03
    """Per record with an e-mail: one character of the user name changed (another address)."""
    second_email: float = 0.12
    """Per person: a second address, used on each of the person's e-mail records with probability 0.4."""
    birth_date_typo: float = 0.02
    """Per record with a birth date: one digit of the day or month changed, or day and month swapped."""
    moved: float = 0.10
    """Per person: an older postcode, on each record with probability 0.5."""
    recycled_phone: float = 0.015
    """Per person: the phone number is one another person used before (who moved to a new number on half
    of her records)."""
    household_device: float = 0.04
    """Per person: lives with another person (same surname and postcode) and shares her device on half of
    the web/app records."""
    tablet_share: float = 0.30
    """Per store record: carries the device id of one of the shop tablets (seen on many people)."""
    tablets: int = 25
    placeholder_phone: float = 0.01
    """Per record with a phone: a placeholder number (0000000000 ...) instead."""

    @classmethod
    def none(cls) -> IdentityNoise:
        """No noise beyond formatting variants (every identifier a person has is written correctly)."""
        return cls(**{f.name: 0 for f in fields(cls)})


@dataclass(frozen=True)
class IdentitySynthConfig:
    """What :func:`generate_identities` draws. Same config and people -> identical records."""

    seed: int = 0
    records_per_person: float = 2.6
    """Mean records per person (``1 + Poisson(mean - 1)``, at most 8)."""
    noise: IdentityNoise = IdentityNoise()
    member_share: float = 0.7
    """Share of people with a loyalty member id (everyone with a loyalty record has one)."""
    account_share: float = 0.4
    """Share of people with an external (social login) account id."""


@dataclass(frozen=True)
class SyntheticIdentities:
    """The generated records (the ``identities`` input) and the truth ``record_id -> person_id``."""

    records: pa.Table
    truth: pa.Table

    def write(self, out_dir: Path) -> dict[str, Path]:
        """Write ``identities.parquet`` and ``identity_truth.parquet`` into ``out_dir`` (atomically)."""
        paths = {"identities": out_dir / "identities.parquet", "truth": out_dir / "identity_truth.parquet"}
        for name, table in (("identities", self.records), ("truth", self.truth)):
            with atomic_path(paths[name]) as tmp:
                pq.write_table(table, tmp)
        return paths


# ---- people -----------------------------------------------------------------------------------------------


@dataclass
class _People:
    person_id: list[str]
    region: np.ndarray  # index into REGIONS
    first: np.ndarray  # index into FIRST_NAMES
    last: np.ndarray  # index into LAST_NAMES
    birth: np.ndarray  # days since 1970-01-01
    postcode: list[str]
    old_postcode: list[str | None]
    email: list[str]
    email2: list[str | None]
    phone: list[str]  # national significant number (digits) with the calling code: "33612345678"
    old_phone: list[str | None]  # a recycled number's new replacement for its first owner
    member: list[str | None]
    account: list[str | None]
    devices: list[list[str]]
    household_device: list[str | None]


def _zipf(rng: np.random.Generator, n_levels: int, size: int, exponent: float = 0.9) -> np.ndarray:
    weights = 1.0 / np.arange(1, n_levels + 1) ** exponent
    return rng.choice(n_levels, size=size, p=weights / weights.sum())


def _ascii(text: str) -> str:
    import unicodedata

    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def _draw_people(person_ids: list[str], regions: list[str | None], config: IdentitySynthConfig) -> _People:
    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(1,)))
    noise = config.noise
    n = len(person_ids)
    region = np.array([REGIONS.index(r) if r in REGIONS else rng.integers(len(REGIONS)) for r in regions])
    first = _zipf(rng, len(FIRST_NAMES), n)
    last = _zipf(rng, len(LAST_NAMES), n)
    birth = rng.integers(
        (date(1945, 1, 1) - date(1970, 1, 1)).days, (date(2006, 12, 31) - date(1970, 1, 1)).days, n
    )
    postcode_pool = [f"{code:05d}" for code in rng.choice(np.arange(1000, 96000), 4000, replace=False)]
    postcode = [postcode_pool[i] for i in _zipf(rng, len(postcode_pool), n, 0.6)]
    moved = rng.random(n) < noise.moved
    old_postcode = [postcode_pool[rng.integers(len(postcode_pool))] if m else None for m in moved]

    used_emails: set[str] = set()

    def email_for(i: int, variant: int) -> str:
        f, la = _ascii(FIRST_NAMES[first[i]]), _ascii(LAST_NAMES[last[i]]).replace(" ", "")
        pattern = (variant + int(rng.integers(6))) % 6
        local = (f"{f}.{la}", f"{f}{la}", f"{f[0]}.{la}", f"{f}_{la}", f"{f}.{la}{birth_year(i) % 100:02d}",
                 f"{la}.{f}")[pattern]  # fmt: skip
        domain = EMAIL_DOMAINS[rng.choice(len(EMAIL_DOMAINS), p=EMAIL_DOMAIN_SHARE)]
        address = f"{local}@{domain}"
        while canonical(address) in used_emails:
            address = f"{local}{int(rng.integers(1, 1000))}@{domain}"
        used_emails.add(canonical(address))
        return address

    def canonical(address: str) -> str:
        """Gmail ignores dots: two addresses differing only by dots are one mailbox."""
        local, domain = address.split("@")
        return local.replace(".", "") + "@gmail.com" if domain == "gmail.com" else address

    def birth_year(i: int) -> int:
        return 1970 + int(birth[i] // 365.25)

    email = [email_for(i, 0) for i in range(n)]
    second = rng.random(n) < noise.second_email
    email2 = [email_for(i, 3) if s else None for i, s in enumerate(second)]

    used_phones: set[str] = set()

    def phone_for(i: int) -> str:
        code = REGIONS[region[i]]
        while True:
            prefix = MOBILE_PREFIX[code][int(rng.integers(len(MOBILE_PREFIX[code])))]
            rest = "".join(map(str, rng.integers(0, 10, NATIONAL_LENGTH[code] - len(prefix))))
            number = CALLING_CODE[code] + prefix + rest
            if number not in used_phones:
                used_phones.add(number)
                return number

    phone = [phone_for(i) for i in range(n)]
    old_phone: list[str | None] = [None] * n
    for b in np.flatnonzero(rng.random(n) < noise.recycled_phone):
        a = int(rng.integers(n))
        if a == b or old_phone[a] is not None or old_phone[b] is not None:
            continue
        # a used the number first and moved to a new one; the operator gave it to b.
        phone[b] = phone[a]
        old_phone[a] = phone_for(a)
    member = [
        f"{int(x):010d}" if m else None
        for x, m in zip(rng.integers(10**9, 10**10, n), rng.random(n) < config.member_share, strict=True)
    ]
    account = [
        f"G{int(x):018d}" if a else None
        for x, a in zip(rng.integers(10**17, 10**18, n), rng.random(n) < config.account_share, strict=True)
    ]
    n_devices = 1 + (rng.random(n) < 0.35)
    devices = [
        [f"{int(rng.integers(2**63)):016x}-{int(rng.integers(2**31)):08x}" for _ in range(k)]
        for k in n_devices
    ]
    household_device: list[str | None] = [None] * n
    for b in np.flatnonzero(rng.random(n) < noise.household_device):
        a = int(rng.integers(n))
        if a == b:
            continue
        household_device[b] = devices[a][0]
        last[b], postcode[b] = last[a], postcode[a]
    return _People(
        list(person_ids), region, first, last, birth, postcode, old_postcode, email, email2, phone, old_phone,
        member, account, devices, household_device,
    )  # fmt: skip


# ---- records ----------------------------------------------------------------------------------------------


def _typo(rng: np.random.Generator, text: str) -> str:
    """One character substituted, dropped or transposed (never the first one)."""
    if len(text) < 3:
        return text + "e"
    i = int(rng.integers(1, len(text) - 1))
    kind = int(rng.integers(3))
    if kind == 0:
        return text[:i] + "aeiourstnl"[int(rng.integers(10))] + text[i + 1 :]
    if kind == 1:
        return text[:i] + text[i + 1 :]
    return text[:i] + text[i + 1] + text[i] + text[i + 2 :]


def _case_variant(rng: np.random.Generator, text: str) -> str:
    choice = int(rng.integers(4))
    if choice == 0:
        return text.upper()
    if choice == 1:
        return text.title()
    if choice == 2:
        return f"  {text} "
    return text


def _write_name(rng: np.random.Generator, people: _People, i: int, noise: IdentityNoise) -> str:
    first, last = FIRST_NAMES[people.first[i]], LAST_NAMES[people.last[i]]
    if rng.random() < noise.name_typo:
        if rng.random() < 0.5:
            first = _typo(rng, first)
        else:
            last = _typo(rng, last)
    if rng.random() < 0.15:
        first, last = _ascii(first), _ascii(last)
    name = f"{last} {first}" if rng.random() < noise.name_swapped else f"{first} {last}"
    if rng.random() < 0.1:
        name = name.replace(" ", "  ", 1)
    return _case_variant(rng, name)


def _write_email(rng: np.random.Generator, address: str, noise: IdentityNoise) -> str:
    local, domain = address.split("@")
    if rng.random() < noise.email_typo:
        local = _typo(rng, local)
    if domain == "gmail.com":
        roll = rng.random()
        if roll < 0.15:
            local = local.replace(".", "")
        elif roll < 0.25 and len(local) > 3:
            j = int(rng.integers(1, len(local) - 1))
            local = local[:j] + "." + local[j:] if "." not in local[j - 1 : j + 1] else local
        if rng.random() < 0.2:
            local = f"{local}+{GMAIL_TAGS[int(rng.integers(len(GMAIL_TAGS)))]}"
        if rng.random() < 0.1:
            domain = "googlemail.com"
    address = f"{local}@{domain}"
    roll = rng.random()
    if roll < 0.1:
        return address.upper()
    if roll < 0.2:
        return address.capitalize()
    if roll < 0.25:
        return f" {address}"
    return address


def _write_phone(rng: np.random.Generator, number: str, region: str, noise: IdentityNoise) -> str:
    if rng.random() < noise.placeholder_phone:
        return PLACEHOLDER_PHONES[int(rng.integers(len(PLACEHOLDER_PHONES)))]
    code = CALLING_CODE[region]
    national = number[len(code) :]
    grouped = " ".join(national[i : i + 2] for i in range(0, len(national), 2))
    roll = int(rng.integers(5 if region == "FR" else 3))
    if roll == 0:
        return f"+{code} {national}"
    if roll == 1:
        return f"00{code}{national}"
    if roll == 2:
        return f"+{code} (0){grouped}"
    if roll == 3:  # national format, as written in the default country
        return " ".join(f"0{national}"[i : i + 2] for i in range(0, len(national) + 1, 2))
    return f"0{national}"


def _write_birth_date(rng: np.random.Generator, days: int, noise: IdentityNoise) -> str:
    born = date.fromordinal(date(1970, 1, 1).toordinal() + int(days))
    if rng.random() < noise.birth_date_typo:
        if born.day <= 12 and born.day != born.month and rng.random() < 0.5:
            born = born.replace(day=born.month, month=born.day)
        elif rng.random() < 0.5:
            day = min(28, max(1, born.day + int(rng.choice([-10, -1, 1, 10]))))
            born = born.replace(day=day)
        else:
            born = born.replace(month=(born.month % 12) + 1, day=min(born.day, 28))
    return born.isoformat()


def _person_records(
    rng: np.random.Generator,
    people: _People,
    i: int,
    sources: np.ndarray,
    config: IdentitySynthConfig,
    tablets: list[str],
) -> list[dict[str, str | None]]:
    noise = config.noise
    region = REGIONS[people.region[i]]
    out = []
    for s in sources:
        source = SOURCES[s]
        present = dict(zip(FIELDS, rng.random(len(FIELDS)) < np.array(FIELD_PRESENCE[source]), strict=True))
        row: dict[str, str | None] = dict.fromkeys(("source", *FIELDS))
        row["source"] = source
        if present["email"]:
            address = people.email2[i] if people.email2[i] and rng.random() < 0.4 else people.email[i]
            row["email"] = _write_email(rng, address, noise)
        if present["phone"]:
            number = people.old_phone[i] if people.old_phone[i] and rng.random() < 0.5 else people.phone[i]
            row["phone"] = _write_phone(rng, number, region, noise)
        if present["member_id"] or source == "loyalty":
            if people.member[i] is None and source == "loyalty":
                people.member[i] = f"{int(rng.integers(10**9, 10**10)):010d}"
            row["member_id"] = people.member[i]
        if present["account_id"]:
            row["account_id"] = people.account[i]
        if source in ("web", "app") and present["device_id"]:
            if people.household_device[i] and rng.random() < 0.5:
                row["device_id"] = people.household_device[i]
            else:
                row["device_id"] = people.devices[i][int(rng.integers(len(people.devices[i])))]
        elif source == "store" and tablets and rng.random() < noise.tablet_share:
            row["device_id"] = tablets[int(rng.integers(len(tablets)))]
        if present["name"]:
            row["name"] = _write_name(rng, people, i, noise)
        if present["birth_date"]:
            row["birth_date"] = _write_birth_date(rng, people.birth[i], noise)
        if present["postcode"]:
            old = people.old_postcode[i]
            row["postcode"] = old if old and rng.random() < 0.5 else people.postcode[i]
        out.append(row)
    return out


def generate_identities(
    person_ids: list[str] | int,
    config: IdentitySynthConfig | None = None,
    *,
    regions: list[str | None] | None = None,
) -> SyntheticIdentities:
    """Spread each person over identifier records; returns the records and the truth.

    ``person_ids``: the people (e.g. a synthetic workspace's ``customer_id`` values), or a count (ids
    ``P0000001`` ...). ``regions`` (one of :data:`REGIONS` per person, optional) sets the phone country.
    Record ids are ``<source>-<n>`` in person order, so the same inputs give the same table.
    """
    config = config or IdentitySynthConfig()
    began = time.perf_counter()
    if isinstance(person_ids, int):
        width = max(7, len(str(person_ids)))
        person_ids = [f"P{i:0{width}d}" for i in range(1, person_ids + 1)]
    regions = regions if regions is not None else [None] * len(person_ids)
    people = _draw_people(person_ids, regions, config)
    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(2,)))
    n = len(person_ids)
    counts = np.minimum(1 + rng.poisson(max(config.records_per_person - 1.0, 0.0), n), 8)
    tablets = [f"tablet-{int(rng.integers(2**40)):010x}" for _ in range(config.noise.tablets)]
    columns: dict[str, list[str | None]] = {c: [] for c in ("record_id", "source", *FIELDS)}
    truth: list[str] = []
    for i in range(n):
        sources = rng.choice(len(SOURCES), size=counts[i], p=SOURCE_SHARE)
        for row in _person_records(rng, people, i, sources, config, tablets):
            for key, value in row.items():
                columns[key].append(value)
            truth.append(person_ids[i])
    record_ids = [f"{s}-{k + 1:08d}" for k, s in enumerate(columns["source"])]
    columns["record_id"] = record_ids
    records = pa.table({c: pa.array(columns[c], pa.string()) for c in ("record_id", "source", *FIELDS)})
    logger.info("%d identity records for %d people (%.1f s)", len(records), n, time.perf_counter() - began)
    return SyntheticIdentities(
        records, pa.table({"record_id": record_ids, "person_id": truth}, schema=TRUTH_SCHEMA)
    )


def without_noise(config: IdentitySynthConfig) -> IdentitySynthConfig:
    """The same config with :meth:`IdentityNoise.none`."""
    return replace(config, noise=IdentityNoise.none())


# ---- activity ---------------------------------------------------------------------------------------------


def spread_activity(synth_dir: Path, identities: SyntheticIdentities, out_dir: Path) -> dict[str, int]:
    """Re-key a synthetic workspace's customers, transactions and events by identity record.

    ``synth_dir`` holds :func:`features.synth.generate` output whose ``customer_id`` values are the
    identities' ``person_id``. Each record becomes a customer (its person's profile and signup); each
    order and each session goes to one of its person's records (store and web orders, app sessions
    prefer their own source's records). Writes ``customers``, ``transactions``, ``events`` (contract
    schemas), ``identities`` and ``identity_truth`` into ``out_dir``; returns the row counts.
    """
    from features.contract import ARROW_SCHEMAS

    out_dir.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        con.register("truth_arrow", identities.truth)
        con.register("records_arrow", identities.records.select(["record_id", "source"]))
        con.execute(
            "CREATE TEMP TABLE rec AS SELECT t.person_id, t.record_id, r.source, "
            "row_number() OVER (PARTITION BY t.person_id ORDER BY t.record_id) - 1 AS k, "
            "count(*) OVER (PARTITION BY t.person_id) AS n FROM truth_arrow t JOIN records_arrow r USING (record_id)"
        )
        src = {name: str(synth_dir / f"{name}.parquet") for name in ("customers", "transactions", "events")}
        queries = {
            "customers": f"SELECT r.record_id AS customer_id, c.signup_ts, c.region, c.gender, c.age_band, c.channel "
            f"FROM read_parquet('{src['customers']}') c JOIN rec r ON r.person_id = c.customer_id",
            "transactions": f"SELECT t.order_id, r.record_id AS customer_id, t.ts, t.amount, t.quantity, t.category, "
            f"t.is_return FROM read_parquet('{src['transactions']}') t JOIN rec r ON r.person_id = t.customer_id "
            f"AND r.k = hash(regexp_replace(t.order_id, '^[OR]', '')) % r.n",
            "events": f"SELECT r.record_id AS customer_id, e.ts, e.event_type, e.category, e.session_id "
            f"FROM read_parquet('{src['events']}') e JOIN rec r ON r.person_id = e.customer_id "
            f"AND r.k = hash(coalesce(e.session_id, '')) % r.n",
        }
        for name, query in queries.items():
            target = out_dir / f"{name}.parquet"
            with atomic_path(target) as tmp:
                table = con.sql(query).to_arrow_table().cast(ARROW_SCHEMAS[name])
                pq.write_table(table, tmp)
            counts[name] = table.num_rows
    paths = identities.write(out_dir)
    counts["identities"] = identities.records.num_rows
    logger.info("activity spread over %d records -> %s (%s)", counts["identities"], out_dir, sorted(paths))
    return counts


__all__ = [
    "FIELD_PRESENCE",
    "SOURCES",
    "IdentityNoise",
    "IdentitySynthConfig",
    "SyntheticIdentities",
    "generate_identities",
    "spread_activity",
    "without_noise",
]
