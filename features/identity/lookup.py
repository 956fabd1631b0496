"""Finding a person by any known identifier, and following merged OneIDs.

Two ways in:

* :func:`resolve_identifier` / :func:`follow`: one-off calls (the CLI) that read the workspace's files
  with DuckDB (``lookup.parquet`` is sorted by key, so a lookup reads one row group).
* :class:`IdentityIndex`: loaded once (serving), then answers from memory: 64+64-bit keys in sorted
  NumPy arrays (16 bytes + 8 per value), merges in a dict. The value is normalised (and hashed when
  configured) by the same SQL expression that normalised the stored values, so ``"+33 6 12 34 56 78"``,
  ``"0612345678"`` and ``"0033612345678"`` find the same person.

A value resolves only when it names exactly one person: a blocked value (a shop tablet, a placeholder
phone) or a weak value seen on several people resolves to None. ``kind`` is a configured identifier kind,
or ``record_id`` (alias ``customer_id``): the id of an identity record or of a customer of the inputs.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import numpy as np

from features.identity.config import IdentityConfig, identity_dir
from features.identity.normalise import lit, normalise_value, run, stored_sql
from features.identity.stitch import oneid_text

if TYPE_CHECKING:
    from portrait.settings import Settings

RECORD_KINDS = ("record_id", "customer_id")


class UnknownKind(ValueError):
    """The identifier kind is not configured."""


def _stored_expression(kind: str, column: str, config: IdentityConfig) -> tuple[str, str]:
    """(key kind, SQL of the stored value) for a looked-up ``kind``."""
    if kind in RECORD_KINDS:
        return "record_id", f"nullif(trim(CAST({column} AS VARCHAR)), '')"
    if kind not in config.kinds:
        known = ", ".join([*config.kinds, "record_id"])
        raise UnknownKind(f"unknown identifier kind {kind!r}; choose one of {known}")
    return kind, stored_sql(kind, column, config)


def _keys_sql(kind: str, column: str, config: IdentityConfig) -> str:
    key_kind, stored = _stored_expression(kind, column, config)
    joined = f"{lit(key_kind)} || chr(31) || {stored}"
    return f"md5_number_lower({joined}) AS key_lo, md5_number_upper({joined}) AS key_hi"


def _md5_keys(text: str) -> tuple[int, int]:
    """DuckDB's ``md5_number_lower`` / ``md5_number_upper`` of ``text``."""
    digest = hashlib.md5(text.encode()).digest()  # a key, not a security measure
    return int.from_bytes(digest[8:], "little"), int.from_bytes(digest[:8], "little")


def _record_id_sql(text: str) -> str | None:
    with duckdb.connect() as con:
        row = run(con, "SELECT nullif(trim($v), '')", {"v": text}).fetchone()
    return row[0] if row else None


def _follow_map(merges: list[tuple[str, str]]) -> dict[str, str]:
    """old -> final survivor, following chains (a merged survivor merged again later)."""
    direct = dict(merges)
    resolved: dict[str, str] = {}
    for start in direct:
        seen = [start]
        current = direct[start]
        while current in direct and current not in seen:
            seen.append(current)
            current = direct[current]
        for old in seen:
            resolved[old] = current
    return resolved


def _read_merges(path: Path) -> list[tuple[str, str]]:
    if not path.exists():
        return []
    with duckdb.connect() as con:
        return run(
            con,
            f"SELECT old_oneid, new_oneid FROM read_parquet({lit(str(path))}) WHERE event = 'merge' ORDER BY changed_at",
        ).fetchall()


def resolve_identifier(settings: Settings, kind: str, value: str) -> str | None:
    """The current OneID of the person holding identifier ``value`` of ``kind``, or None.

    Reads the workspace's files (a few milliseconds); for many lookups load an :class:`IdentityIndex`.
    Raises :class:`UnknownKind` for a kind that is not configured.
    """
    config = IdentityConfig.from_settings(settings)
    path = identity_dir(settings) / "lookup.parquet"
    index = IdentityIndex(config, *(np.zeros(0, dtype=t) for t in (np.uint64, np.uint64, np.int64)), {})
    lo, hi, missing = index._keys(kind, [value])
    if missing[0] or not path.exists():
        return None
    with duckdb.connect() as con:
        row = run(
            con,
            f"SELECT oneid_num FROM read_parquet({lit(str(path))}) WHERE key_lo = $lo AND key_hi = $hi",
            {"lo": int(lo[0]), "hi": int(hi[0])},
        ).fetchone()
    if row is None:
        return None
    return follow(settings, oneid_text(int(row[0])))


def follow(settings: Settings, oneid: str) -> str:
    """The OneID that ``oneid`` now goes by (itself unless it was merged into another)."""
    return _follow_map(_read_merges(identity_dir(settings) / "merges.parquet")).get(oneid, oneid)


class IdentityIndex:
    """All resolvable identifiers of the last stitching run, in memory (see the module doc).

    Normalisation runs in Python for ASCII values (see :func:`features.identity.normalise_value`), then
    an MD5 key and a binary search: ``resolve`` takes microseconds, ``follow`` is a dict lookup. Read-only
    after loading, so safe to share between threads.
    """

    def __init__(
        self,
        config: IdentityConfig,
        key_lo: np.ndarray,
        key_hi: np.ndarray,
        oneid_num: np.ndarray,
        merges: dict[str, str],
    ) -> None:
        self.config = config
        self._lo, self._hi, self._num = key_lo, key_hi, oneid_num
        self._merges = merges

    @classmethod
    def load(cls, settings: Settings) -> IdentityIndex:
        """Load the index of the workspace's last stitching run (empty when there was none)."""
        config = IdentityConfig.from_settings(settings)
        directory = identity_dir(settings)
        path = directory / "lookup.parquet"
        if not path.exists():
            empty = np.zeros(0, dtype=np.uint64)
            return cls(config, empty, empty, np.zeros(0, dtype=np.int64), {})
        import pyarrow.parquet as pq

        table = pq.read_table(path, columns=["key_lo", "key_hi", "oneid_num"])
        lo = table.column("key_lo").to_numpy().astype(np.uint64, copy=False)
        order = np.argsort(lo, kind="stable") if lo.size and np.any(lo[1:] < lo[:-1]) else None
        hi = table.column("key_hi").to_numpy().astype(np.uint64, copy=False)
        num = table.column("oneid_num").to_numpy().astype(np.int64, copy=False)
        if order is not None:
            lo, hi, num = lo[order], hi[order], num[order]
        merges = _follow_map(_read_merges(directory / "merges.parquet"))
        return cls(config, lo, hi, num, merges)

    def __len__(self) -> int:
        return int(self._lo.size)

    @property
    def nbytes(self) -> int:
        """Memory held by the key arrays."""
        return int(self._lo.nbytes + self._hi.nbytes + self._num.nbytes)

    def _keys(self, kind: str, values: list[str | None]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        key_kind = "record_id" if kind in RECORD_KINDS else kind
        if key_kind != "record_id" and kind not in self.config.kinds:
            _stored_expression(kind, "v", self.config)  # raises UnknownKind
        lo = np.zeros(len(values), dtype=np.uint64)
        hi = np.zeros(len(values), dtype=np.uint64)
        missing = np.zeros(len(values), dtype=bool)
        for i, value in enumerate(values):
            if value is None:
                missing[i] = True
                continue
            text = str(value)
            if key_kind == "record_id":
                stored = text.strip(" ") or None if text.isascii() else _record_id_sql(text)
            else:
                stored = normalise_value(kind, text, self.config)
            if stored is None:
                missing[i] = True
                continue
            lo[i], hi[i] = _md5_keys(f"{key_kind}\x1f{stored}")
        return lo, hi, missing

    def resolve_many(self, kind: str, values: list[str]) -> list[str | None]:
        """The current OneID for each value (None where the value names no single person)."""
        if not values:
            return []
        lo, hi, missing = self._keys(kind, values)
        start = np.searchsorted(self._lo, lo, side="left")
        stop = np.searchsorted(self._lo, lo, side="right")
        out: list[str | None] = []
        for i in range(len(values)):
            found = None
            if not missing[i]:
                for j in range(start[i], stop[i]):
                    if self._hi[j] == hi[i]:
                        found = self.follow(oneid_text(int(self._num[j])))
                        break
            out.append(found)
        return out

    def resolve(self, kind: str, value: str) -> str | None:
        """The current OneID of the person holding ``value`` of ``kind``, or None."""
        return self.resolve_many(kind, [value])[0]

    def follow(self, oneid: str) -> str:
        """The OneID that ``oneid`` now goes by (itself unless it was merged)."""
        return self._merges.get(oneid, oneid)
