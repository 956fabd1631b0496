"""The identity step's configuration, read once from :class:`portrait.settings.Settings`."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from portrait.settings import Settings

Strength = Literal["strong", "weak"]
Format = Literal["email", "phone", "id", "id_lower"]

FIXED_COLUMNS: tuple[str, ...] = ("record_id", "source", "name", "birth_date", "postcode")
"""Columns of the identities input besides the identifier kinds."""
FUZZY_COLUMNS: tuple[str, ...] = ("first_name", "last_name", "birth_date", "postcode")
"""What the probabilistic model compares besides the identifiers (derived from ``name`` and the rest)."""
RESERVED: frozenset[str] = frozenset(
    {*FIXED_COLUMNS, *FUZZY_COLUMNS, "rid", "sc", "oneid", "row_hash", "unique_id", "kind", "value"}
)
_KIND_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class IdentityConfigError(ValueError):
    """The identity settings cannot be used (one sentence naming the setting)."""


@dataclass(frozen=True)
class IdentityConfig:
    """What the identity step needs from the settings, validated."""

    kinds: dict[str, Strength]
    formats: dict[str, Format]
    phone_country_code: str = "33"
    email_domain_aliases: tuple[tuple[str, str], ...] = (("googlemail.com", "gmail.com"),)
    email_dotless_domains: tuple[str, ...] = ("gmail.com",)
    hash_salt: str | None = None
    """Set: identifiers are stored as salted SHA-256 (hex) of their normalised value."""
    max_people_per_value: int = 5
    max_cluster_records: int = 40
    match_probability: float = 0.99
    conflict_guard: bool = True
    probabilistic: bool = True
    model: Literal["em", "priors"] = "em"
    threads: int | None = None
    home: Path | None = None

    def __post_init__(self) -> None:
        if not self.kinds:
            raise IdentityConfigError("identity_kinds is empty: configure at least one identifier kind")
        for kind in self.kinds:
            if not _KIND_NAME.match(kind) or kind in RESERVED:
                raise IdentityConfigError(
                    f"identity_kinds: {kind!r} is not a usable kind name (lower-case letters, digits and '_', "
                    f"starting with a letter; not one of {', '.join(sorted(RESERVED))})"
                )
        unknown = sorted(set(self.formats) - set(self.kinds))
        if unknown:
            raise IdentityConfigError(
                f"identity_kind_formats names kinds that are not configured: {', '.join(unknown)}"
            )
        if self.hash_salt is not None and not self.hash_salt:
            raise IdentityConfigError("identity_hash_identifiers is on but identity_hash_salt is empty")

    @classmethod
    def from_settings(cls, settings: Settings) -> IdentityConfig:
        return cls(
            kinds=dict(settings.identity_kinds),
            formats=dict(settings.identity_kind_formats),
            phone_country_code=settings.identity_phone_country_code,
            email_domain_aliases=tuple(sorted(settings.identity_email_domain_aliases.items())),
            email_dotless_domains=tuple(settings.identity_email_dotless_domains),
            hash_salt=settings.identity_hash_salt if settings.identity_hash_identifiers else None,
            max_people_per_value=settings.identity_max_people_per_value,
            max_cluster_records=settings.identity_max_cluster_records,
            match_probability=settings.identity_match_probability,
            conflict_guard=settings.identity_conflict_guard,
            probabilistic=settings.identity_probabilistic,
            model=settings.identity_model,
            threads=settings.identity_threads,
            home=settings.home,
        )

    @property
    def strong(self) -> list[str]:
        return [k for k, s in self.kinds.items() if s == "strong"]

    @property
    def weak(self) -> list[str]:
        return [k for k, s in self.kinds.items() if s == "weak"]

    def format_of(self, kind: str) -> Format:
        return self.formats.get(kind, "id")

    @property
    def hash_fingerprint(self) -> str | None:
        """Identifies the salt without revealing it (so a changed salt is noticed)."""
        if self.hash_salt is None:
            return None
        return hashlib.sha256(b"portrait-identity-salt:" + self.hash_salt.encode()).hexdigest()[:16]

    def normalisation_signature(self) -> dict[str, object]:
        """What the stored identifier values depend on: a change needs a full run."""
        return {
            "kinds": self.kinds,
            "formats": {k: self.format_of(k) for k in self.kinds},
            "phone_country_code": self.phone_country_code,
            "email_domain_aliases": [list(p) for p in self.email_domain_aliases],
            "email_dotless_domains": list(self.email_dotless_domains),
            "hash": self.hash_fingerprint,
        }


def identity_dir(settings: Settings) -> Path:
    """``<home>/data/identity``: the record -> OneID map, the merge log, the model and the lookup index."""
    return settings.data_root / "identity"
