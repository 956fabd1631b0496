"""Stitching identity records into people with stable OneIDs (full and incremental runs).

A run reads the validated identities (``data/clean/identities.parquet``) plus, as records without
identifiers, every customer id of the customers input that has no identity record, and writes
``data/identity/``:

* ``oneid_map.parquet``: ``record_id -> oneid``, with ``source``, ``first_seen`` (first run that saw the
  record), ``updated_at`` (last run that changed its OneID), and the record's ``rid`` and ``row_hash``
  (its stable number and a hash of its values, so the next run can tell new and changed records);
* ``merges.parquet``: the log of OneID changes: ``old_oneid``, ``new_oneid``, ``changed_at``, ``event``
  (``merge``: the old id is retired in favour of the new one; ``split``: some of the old id's records
  moved to the new id, the old id lives on), ``reason`` (``strong identifier``, ``probabilistic match``,
  or for a split ``records moved by a full run``), ``run_id``;
* ``value_status.parquet``: every identifier value held by more than one record or person: ``kind``,
  ``value``, ``status`` (``linked``, ``weak``, ``conflict``: evidence only, ``blocked``: seen on too many
  people), ``holders`` and ``people``;
* ``lookup.parquet``: the index of :mod:`features.identity.lookup` (every identifier value that names one
  person, and every record id);
* ``model.json`` (the Splink model) and ``state.json``; the run's report goes to
  ``data/reports/identity.json``. Files are written beside their targets and moved into place together,
  ``state.json`` last.

A full run links everything again; a person keeps her OneID: every old OneID goes to the new cluster
holding most of its records, a cluster takes the smallest (oldest) OneID it received, the others are
logged as merged into it, and a cluster that received none gets a new one (ids are never reused). An
incremental run (the default when only new records arrived and nothing that the stored values depend on
changed) links the new records to each other and to the existing people, never renumbering them; what
it cannot do (undo an earlier link that a newly blocked value made) waits for the next full run. Its
cost: the validated identities and the previous map are read once (to tell new records and give every
record its stable number and previous OneID); only the existing records that hold a value a new record
holds (the guards) or share a blocking key with one (the model) are looked at further, and the stored
model is reused, never trained again.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import duckdb
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from features.identity import graph, model
from features.identity.config import IdentityConfig
from features.identity.normalise import IdentityValidation, Rows, clean_schema, lit, qi, run
from portrait.files import publish, spill_folder, temp_beside

logger = logging.getLogger(__name__)

ONEID_PREFIX = "OID"
ONEID_DIGITS = 10
NEW_NODE_OFFSET = 1 << 40
"""Incremental runs: node ids of new records (existing people use their OneID number, always smaller)."""
FILES = ("oneid_map", "merges", "value_status", "lookup")
REPORT_EXAMPLES = 20


def oneid_text(number: int) -> str:
    """``OID0000000042`` for 42."""
    return f"{ONEID_PREFIX}{number:0{ONEID_DIGITS}d}"


def oneid_number(oneid: str) -> int | None:
    """42 for ``OID0000000042``; None for anything else."""
    digits = oneid[len(ONEID_PREFIX) :] if oneid.startswith(ONEID_PREFIX) else ""
    return int(digits) if digits.isdigit() and len(digits) == ONEID_DIGITS else None


def _oneid_sql(number: str) -> str:
    return f"'{ONEID_PREFIX}' || lpad(CAST({number} AS VARCHAR), {ONEID_DIGITS}, '0')"


def _oneid_num_sql(text: str) -> str:
    return f"CAST(substr({text}, {len(ONEID_PREFIX) + 1}) AS BIGINT)"


def _constrained_union(
    edges: list[tuple[int, int]], incompatible: list[tuple[int, int]]
) -> tuple[dict[int, int], int, int]:
    """Join nodes along ``edges`` (best first) unless the two groups hold an ``incompatible`` pair.

    Returns (node -> smallest node of its group, for every node of an edge; joins made; edges refused).
    """
    parent: dict[int, int] = {}
    members: dict[int, list[int]] = {}
    enemies: dict[int, set[int]] = {}
    for a, b in incompatible:
        enemies.setdefault(a, set()).add(b)
        enemies.setdefault(b, set()).add(a)

    def find(x: int) -> int:
        root = x
        while parent.get(root, root) != root:
            root = parent[root]
        while parent.get(x, x) != root:
            parent[x], x = root, parent[x]
        return root

    joins = refused = 0
    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra == rb:
            continue
        small, large = sorted((ra, rb), key=lambda r: len(members.get(r, [r])))
        large_root = large
        if any(find(e) == large_root for m in members.get(small, [small]) for e in enemies.get(m, ())):
            refused += 1
            continue
        keep, gone = min(ra, rb), max(ra, rb)
        parent[gone] = keep
        members[keep] = members.pop(keep, [keep]) + members.pop(gone, [gone])
        joins += 1
    return {node: find(node) for node in {n for edge in edges for n in edge}}, joins, refused


# ---- state and report -------------------------------------------------------------------------------------


class IdentityState(BaseModel):
    """What later runs need to know about the earlier ones (``data/identity/state.json``)."""

    version: int = 1
    next_oneid: int = 1
    next_rid: int = 0
    runs: int = 0
    last_run_id: str | None = None
    last_run_at: datetime | None = None
    signature: dict[str, Any] = Field(default_factory=dict)
    model_trained_at: datetime | None = None


class ValueExample(BaseModel):
    kind: str
    value: str
    records: int
    people: int


class ClusterExample(BaseModel):
    records: int
    strong_components: int
    record_ids: list[str]


class StitchReport(BaseModel):
    """What a stitching run did (``data/reports/identity.json``)."""

    run_id: str
    at: datetime
    mode: Literal["full", "incremental", "unchanged"]
    note: str | None = None
    records: int
    new_records: int
    records_without_identity: int = Field(
        description="Customer ids without an identity record: records without identifiers."
    )
    people: int
    new_oneids: int
    merged_oneids: int
    split_oneids: int
    strong_components: int = Field(
        description="Full run: groups of records joined by strong identifiers; incremental: among the new records "
        "and the people they touch."
    )
    linked_values: int = Field(
        description="Identifier values on several records that link them (this run's scope)."
    )
    conflicted_values: int = Field(description="Strong values kept from linking by the conflict guard.")
    blocked_values: int = Field(description="Values on more people than identity_max_people_per_value.")
    blocked_examples: list[ValueExample] = Field(default_factory=list)
    probabilistic_pairs: int = Field(description="Record pairs at or above the match probability.")
    probabilistic_merges: int = Field(description="Strong components joined by probabilistic links.")
    contradicted_links: int = Field(
        0,
        description="Probabilistic links refused: the two sides hold clearly different first names or birth dates.",
    )
    oversized_clusters: list[ClusterExample] = Field(
        default_factory=list, description="Clusters that probabilistic links would have grown past the limit."
    )
    oversized_strong_components: int = 0
    model_trained: bool = False
    guard_rounds: int = 0
    seconds: dict[str, float] = Field(default_factory=dict)
    validation: IdentityValidation | None = None
    rewritten: dict[str, int] = Field(
        default_factory=dict, description="Rows of the clean tables keyed by OneID."
    )


@dataclass
class _Timer:
    seconds: dict[str, float] = field(default_factory=dict)
    _last: float = field(default_factory=time.perf_counter)

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(self.seconds.get(name, 0.0) + now - self._last, 3)
        self._last = now


# ---- the run ------------------------------------------------------------------------------------------------


class StitchError(RuntimeError):
    """Stitching cannot run (one sentence naming the problem)."""


@dataclass
class StitchInputs:
    """Where a run reads from and writes to."""

    clean_identities: Path | None
    """Validated identities (None: no identity input, every customer is a person of her own)."""
    customers: Path | None
    """The customers input keyed by record id (its ids without an identity record become records)."""
    identity_dir: Path
    report_path: Path | None = None


def _connect(config: IdentityConfig, spill: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    run(con, "SET TimeZone = 'UTC'")
    run(con, "SET enable_progress_bar = false")
    run(con, f"SET temp_directory = {lit(str(spill))}")
    if config.threads:
        run(con, f"SET threads = {int(config.threads)}")
    return con


def _count(con: duckdb.DuckDBPyConnection, query: str) -> int:
    return int(run(con, f"SELECT count(*) FROM ({query})")[0][0])


def _read_state(directory: Path) -> IdentityState | None:
    path = directory / "state.json"
    if not path.exists():
        return None
    return IdentityState.model_validate_json(path.read_text(encoding="utf-8"))


def _has_previous(directory: Path) -> bool:
    return (
        all((directory / f"{name}.parquet").exists() for name in FILES)
        and (directory / "state.json").exists()
    )


def stitch(
    inputs: StitchInputs,
    config: IdentityConfig,
    *,
    full: bool = False,
    retrain: bool = False,
    now: datetime | None = None,
    validation: IdentityValidation | None = None,
) -> StitchReport:
    """Stitch the records into people and publish ``data/identity`` (see the module doc).

    ``full``: link everything again even when an incremental run would do; ``retrain``: train the Splink
    model again (implies ``full``). ``now``: the time written to the merge log (default: now).
    """
    now = (now or datetime.now(UTC)).astimezone(UTC)
    directory = inputs.identity_dir
    directory.mkdir(parents=True, exist_ok=True)
    cleanup = ExitStack()
    con = _connect(config, cleanup.enter_context(spill_folder(directory)))  # removed even after a kill
    timer = _Timer()
    try:
        job = _Run(con, config, inputs, now, timer)
        job.load_current()
        state = _read_state(directory) if _has_previous(directory) else None
        mode, note = job.choose_mode(state, full=full or retrain)
        report = job.execute(mode, state, retrain=retrain, note=note)
        report.validation = validation
        report.seconds = dict(timer.seconds)
        job.publish(report)
        return report
    finally:
        con.close()
        cleanup.close()


class _Run:
    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        config: IdentityConfig,
        inputs: StitchInputs,
        now: datetime,
        timer: _Timer,
    ) -> None:
        self.con, self.config, self.inputs, self.now, self.timer = con, config, inputs, now, timer
        self.dir = inputs.identity_dir
        self.run_id = now.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        self.kinds = list(config.kinds)
        self.moves: list[tuple[Path, Path]] = []
        self.model: dict[str, Any] | None = None
        self.model_trained = False
        self.contradicted_links = 0
        self.no_writes = False
        self.state = IdentityState()

    def sql(self, query: str, params: dict[str, Any] | None = None) -> Rows:
        return run(self.con, query, params)

    def path(self, name: str) -> str:
        return lit(str(self.dir / f"{name}.parquet"))

    # ---- inputs ---------------------------------------------------------------------------------------

    def load_current(self) -> None:
        """Temp table ``cur``: every record of this run (identities, then customers without one)."""
        kinds = ", ".join(qi(k) for k in self.kinds)
        empty = clean_schema(self.config).empty_table()
        if self.inputs.clean_identities is not None:
            names = pq.read_schema(self.inputs.clean_identities).names
            missing = [c for c in empty.schema.names if c not in names]
            if missing:
                raise StitchError(
                    f"{self.inputs.clean_identities} lacks {', '.join(missing)}: validate the identities again "
                    "(the identifier kinds in the settings changed?)"
                )
            identities = f"SELECT record_id, source, first_name, last_name, birth_date, postcode, {kinds} FROM read_parquet({lit(str(self.inputs.clean_identities))})"
        else:
            self.con.register("empty_identities", empty)
            identities = f"SELECT record_id, source, first_name, last_name, birth_date, postcode, {kinds} FROM empty_identities"
        hashed = ", ".join(
            ["source", "first_name", "last_name", "birth_date", "postcode", *(qi(k) for k in self.kinds)]
        )
        # one pass over the (large) identities: read, hash, materialise once
        self.sql(f"CREATE TEMP TABLE cur AS SELECT *, hash({hashed}) AS row_hash FROM ({identities})")
        self.n_implicit = 0
        if self.inputs.customers is not None:
            nulls = ", ".join(f"CAST(NULL AS VARCHAR) AS {qi(k)}" for k in self.kinds)
            implicit = f"SELECT DISTINCT customer_id AS record_id FROM read_parquet({lit(str(self.inputs.customers))})"
            self.sql(
                "CREATE TEMP TABLE implicit AS SELECT c.record_id, 'customers' AS source, NULL::VARCHAR AS first_name, "
                f"NULL::VARCHAR AS last_name, NULL::DATE AS birth_date, NULL::VARCHAR AS postcode, {nulls} "
                f"FROM ({implicit}) c ANTI JOIN cur i ON i.record_id = c.record_id"
            )
            self.n_implicit = _count(self.con, "SELECT * FROM implicit")
            if self.n_implicit:
                self.sql(f"INSERT INTO cur SELECT *, hash({hashed}) FROM implicit")
            self.sql("DROP TABLE implicit")
        self.n_records = _count(self.con, "SELECT * FROM cur")
        if self.n_records == 0:
            raise StitchError("no identity record and no customer: nothing to stitch")
        self.timer.lap("load")

    def choose_mode(self, state: IdentityState | None, *, full: bool) -> tuple[str, str | None]:
        signature = json.loads(json.dumps(self.config.normalisation_signature()))
        if state is None:
            self.state = IdentityState(signature=signature)
            return "full", "first run"
        self.state = state.model_copy()
        if state.signature != signature:
            self.state.signature = signature
            return "full", "identifier settings changed since the last run: linked again from scratch"
        self._load_prev()
        changed, added = (
            int(n)
            for n in self.sql(
                "SELECT count(*) FILTER (WHERE p.record_id IS NOT NULL AND (c.record_id IS NULL OR c.row_hash <> p.row_hash)), "
                "count(*) FILTER (WHERE p.record_id IS NULL) FROM prev p FULL JOIN cur c USING (record_id)"
            ).fetchone()
        )
        if full:
            return "full", None
        if changed:
            return (
                "full",
                f"{changed:,} records changed or disappeared since the last run: linked again from scratch",
            )
        if self.config.probabilistic and not (self.dir / "model.json").exists():
            return "full", "no trained model yet"
        if added == 0:
            return "unchanged", "no new record"
        return "incremental", None

    def _load_prev(self) -> None:
        self.sql(
            "CREATE TEMP TABLE prev AS SELECT rid, record_id, row_hash, oneid, source, first_seen, updated_at "
            f"FROM read_parquet({self.path('oneid_map')})"
        )

    def execute(
        self, mode: str, state: IdentityState | None, *, retrain: bool, note: str | None
    ) -> StitchReport:
        if mode == "unchanged":
            return self._unchanged(note)
        if mode == "incremental":
            return self._incremental(note)
        return self._full(state, retrain=retrain, note=note)

    # ---- helpers ----------------------------------------------------------------------------------------

    def _assign_rids(self, has_prev: bool) -> None:
        """Temp table ``rec``: ``cur`` with a stable integer id per record (``rid``) and, with a previous
        run, the number of its OneID then (``prev_num``, NULL for a new record)."""
        self.first_new_rid = self.state.next_rid
        if has_prev:
            self.sql(
                f"CREATE TEMP TABLE new_rids AS SELECT record_id, {self.state.next_rid} + row_number() OVER "
                "(ORDER BY record_id) - 1 AS rid FROM (SELECT record_id FROM cur ANTI JOIN prev USING (record_id))"
            )
            self.sql(
                f"CREATE TEMP TABLE rec AS SELECT coalesce(p.rid, n.rid) AS rid, c.*, {_oneid_num_sql('p.oneid')} AS prev_num "
                "FROM cur c LEFT JOIN prev p USING (record_id) LEFT JOIN new_rids n USING (record_id)"
            )
        else:
            self.sql(
                f"CREATE TEMP TABLE rec AS SELECT {self.state.next_rid} + row_number() OVER (ORDER BY record_id) - 1 AS rid, * FROM cur"
            )
        self.state.next_rid = int(self.sql("SELECT coalesce(max(rid) + 1, 0) FROM rec").fetchone()[0])
        self.state.next_rid = max(
            self.state.next_rid,
            int(self.sql("SELECT coalesce(max(rid) + 1, 0) FROM prev").fetchone()[0]) if has_prev else 0,
        )

    def _name_frequencies(self) -> None:
        """``tf_first_name`` / ``tf_last_name``: how common each name is among all records (Splink's term
        frequencies, registered with the model rather than computed from whatever table it scores)."""
        for column in ("first_name", "last_name"):
            self.sql(
                f"CREATE OR REPLACE TEMP TABLE tf_{column} AS SELECT {column}, count(*) / sum(count(*)) OVER () "
                f"AS tf_{column} FROM rec WHERE {column} IS NOT NULL GROUP BY {column}"
            )

    def _holders(self, source: str, node: str, out: str, *, only: str | None = None) -> None:
        """``out(node, rid, kind, value, strong, birth_date, full_name)``: one row per identifier value of ``source``
        (only the values in table ``only(kind, value)`` when given)."""
        parts = []
        for k, strength in self.config.kinds.items():
            keep = f" AND {qi(k)} IN (SELECT value FROM {only} WHERE kind = {lit(k)})" if only else ""
            parts.append(
                f"SELECT {node} AS node, rid, {lit(k)} AS kind, {qi(k)} AS value, {str(strength == 'strong').lower()} "
                f"AS strong, birth_date, nullif(concat_ws(' ', first_name, last_name), '') AS full_name "
                f"FROM {source} WHERE {qi(k)} IS NOT NULL{keep}"
            )
        self.sql(f"CREATE OR REPLACE TEMP TABLE {out} AS " + " UNION ALL ".join(parts))

    def _model_table(
        self, source: str, sc: str, out: str, extra_blocked: str | None = None, *, kind: str = "TABLE"
    ) -> None:
        """``out``: the Splink input (rid, sc, fuzzy columns, kinds with blocked values cleared)."""
        blocked = "SELECT kind, value FROM value_status WHERE status = 'blocked'"
        if extra_blocked:
            blocked += f" UNION SELECT kind, value FROM {extra_blocked}"
        self.sql(f"CREATE OR REPLACE TEMP TABLE blocked_values AS SELECT DISTINCT * FROM ({blocked})")
        cleared = ", ".join(
            f"CASE WHEN {qi(k)} IN (SELECT value FROM blocked_values WHERE kind = {lit(k)}) THEN NULL ELSE {qi(k)} END AS {qi(k)}"
            for k in self.kinds
        )
        self.sql(
            f"CREATE OR REPLACE TEMP {kind} {out} AS SELECT rid, {sc} AS sc, first_name, last_name, birth_date, postcode, "
            f"{cleared} FROM {source}"
        )

    def _ensure_model(self, table: str, *, retrain: bool) -> None:
        path = self.dir / "model.json"
        if path.exists() and not retrain:
            self.model = json.loads(path.read_text(encoding="utf-8"))
            return
        logger.info("training the identity model (%s)", self.config.model)
        self.model = model.train(self.con, table, self.config)
        self.model_trained = True
        self.state.model_trained_at = self.now
        self.timer.lap("train")

    def _final_clusters(
        self, sc_sizes: str, sc_edges: str, records: str
    ) -> tuple[int, list[ClusterExample], int]:
        """``final(sc, cluster)``: strong components joined by probabilistic edges (``sc_edges``: node_l,
        node_r, p), with the guards. Returns (joins made, oversized clusters, oversized strong components).

        * Cluster size: a connected group of components over ``identity_max_cluster_records`` records is
          reported and left split by its strong links.
        * Contradictions (with the conflict guard): components join greedily, most probable edge first,
          and never when a record of one and a record of the other are clearly different people
          (:data:`features.identity.model.CONTRADICTION_SQL`), even if a third record (say one without a
          name that shares a household's device) links them.
        """
        self.sql(f"CREATE OR REPLACE TEMP TABLE sc_nodes AS SELECT sc AS node, n FROM {sc_sizes}")
        graph.components(self.con, "sc_nodes", sc_edges, "prob_rep")
        limit = self.config.max_cluster_records
        self.sql(
            "CREATE OR REPLACE TEMP TABLE prob_size AS SELECT p.rep, sum(s.n) AS n, count(*) AS n_sc "
            "FROM prob_rep p JOIN sc_nodes s USING (node) GROUP BY p.rep"
        )
        self.sql(
            "CREATE OR REPLACE TEMP TABLE joinable AS SELECT p.node, p.rep FROM prob_rep p JOIN prob_size z USING (rep) "
            f"WHERE z.n_sc > 1 AND z.n <= {limit}"
        )
        if self.config.conflict_guard:
            self.sql(
                "CREATE OR REPLACE TEMP TABLE sc_attr AS SELECT DISTINCT j.rep, r.sc, r.first_name, r.last_name, r.birth_date "
                f"FROM {records} r JOIN joinable j ON j.node = r.sc WHERE r.first_name IS NOT NULL OR r.birth_date IS NOT NULL"
            )
            incompatible = self.sql(
                "SELECT DISTINCT a.sc, b.sc FROM sc_attr a JOIN sc_attr b ON a.rep = b.rep AND a.sc < b.sc "
                f"WHERE coalesce(({model.CONTRADICTION_SQL}), false)"
            ).fetchall()
        else:
            incompatible = []
        edges = self.sql(
            f"SELECT e.node_l, e.node_r FROM {sc_edges} e SEMI JOIN joinable j ON j.node = e.node_l "
            "ORDER BY e.p DESC, e.node_l, e.node_r"
        ).fetchall()
        clusters, joins, refused = _constrained_union(edges, incompatible)
        self.contradicted_links = refused
        import pyarrow as pa

        self.con.register(
            "joined_arrow",
            pa.table(
                {
                    "sc": pa.array(list(clusters), pa.int64()),
                    "cluster": pa.array(list(clusters.values()), pa.int64()),
                }
            ),
        )
        self.sql(
            "CREATE OR REPLACE TEMP TABLE final AS SELECT n.node AS sc, coalesce(j.cluster, n.node) AS cluster "
            "FROM sc_nodes n LEFT JOIN joined_arrow j ON j.sc = n.node"
        )
        self.con.unregister("joined_arrow")
        oversized = self.sql(
            f"SELECT rep, n, n_sc FROM prob_size WHERE n > {limit} AND n_sc > 1 ORDER BY n DESC LIMIT {REPORT_EXAMPLES}"
        ).fetchall()
        examples = []
        for rep, n, n_sc in oversized:
            ids = [r[0] for r in self.sql(
                "SELECT record_id FROM sc_records WHERE sc IN (SELECT node FROM prob_rep WHERE rep = $rep) "
                "ORDER BY record_id LIMIT 5", {"rep": rep}).fetchall()]  # fmt: skip
            examples.append(ClusterExample(records=int(n), strong_components=int(n_sc), record_ids=ids))
        strong_over = int(self.sql(f"SELECT count(*) FROM sc_nodes WHERE n > {limit}").fetchone()[0])
        if oversized:
            logger.warning(
                "%d clusters would exceed %d records: kept apart (strong links only)", len(oversized), limit
            )
        return joins, examples, strong_over

    def _value_examples(self) -> list[ValueExample]:
        rows = self.sql(
            "SELECT kind, value, n_records, n_people FROM value_status WHERE status = 'blocked' "
            f"ORDER BY n_people DESC, kind, value LIMIT {REPORT_EXAMPLES}"
        ).fetchall()
        return [ValueExample(kind=k, value=v, records=int(n), people=int(p)) for k, v, n, p in rows]

    # ---- full run -------------------------------------------------------------------------------------------

    def _full(self, state: IdentityState | None, *, retrain: bool, note: str | None) -> StitchReport:
        has_prev = state is not None
        if has_prev and not self._table_exists("prev"):
            self._load_prev()
        self._assign_rids(has_prev)
        self._name_frequencies()
        self._holders("rec", "rid", "holders")
        self.sql("CREATE OR REPLACE TEMP TABLE nodes AS SELECT rid AS node FROM rec")
        guard = graph.strong_components(
            self.con,
            nodes="nodes",
            holders="holders",
            max_people=self.config.max_people_per_value,
            conflict_guard=self.config.conflict_guard,
        )
        self.timer.lap("strong links")
        self.sql(
            "CREATE OR REPLACE TEMP TABLE rec_sc AS SELECT r.*, s.rep AS sc FROM rec r JOIN strong_rep s ON s.node = r.rid"
        )
        self._model_table("rec_sc", "sc", "sp")
        if self.config.probabilistic:
            self._ensure_model("sp", retrain=retrain)
            pairs = model.predict(self.con, self.model, self.config.match_probability, table="sp")
        else:
            pairs = self._no_pairs()
        self.timer.lap("probabilistic links")
        self.sql("CREATE OR REPLACE TEMP TABLE sc_records AS SELECT sc, record_id FROM rec_sc")
        self.sql("CREATE OR REPLACE TEMP TABLE sc_sizes AS SELECT sc, count(*) AS n FROM rec_sc GROUP BY sc")
        self.sql(
            "CREATE OR REPLACE TEMP TABLE sc_edges AS SELECT least(a.sc, b.sc) AS node_l, greatest(a.sc, b.sc) AS node_r, "
            "max(p.match_probability) AS p "
            "FROM prob_pairs p JOIN sp a ON a.rid = p.rid_l JOIN sp b ON b.rid = p.rid_r WHERE a.sc <> b.sc GROUP BY ALL"
        )
        prob_merges, oversized, strong_over = self._final_clusters("sc_sizes", "sc_edges", "sp")
        self.sql(
            "CREATE OR REPLACE TEMP TABLE clustered AS SELECT r.*, f.cluster FROM rec_sc r JOIN final f USING (sc)"
        )
        self.timer.lap("clusters")
        merged, split, minted = self._assign_full(has_prev)
        self.timer.lap("oneids")
        self._write_all(source="clustered")
        return self._report(
            "full", note, guard, new_records=self._new_count(has_prev), pairs=pairs, prob_merges=prob_merges,
            oversized=oversized, strong_over=strong_over, merged=merged, split=split, minted=minted,
        )  # fmt: skip

    def _no_pairs(self) -> int:
        self.sql(
            "CREATE OR REPLACE TEMP TABLE prob_pairs (rid_l BIGINT, rid_r BIGINT, match_probability DOUBLE)"
        )
        return 0

    def _table_exists(self, name: str) -> bool:
        return bool(
            self.sql("SELECT count(*) FROM duckdb_tables() WHERE table_name = $n", {"n": name}).fetchone()[0]
        )

    def _new_count(self, has_prev: bool) -> int:
        return (
            self.n_records
            if not has_prev
            else _count(self.con, "SELECT 1 FROM cur ANTI JOIN prev USING (record_id)")
        )

    def _assign_full(self, has_prev: bool) -> tuple[int, int, int]:
        """``assigned(cluster, oneid)`` reconciling the clusters with the previous OneIDs; logs to ``events``."""
        prev = (
            "prev" if has_prev else "(SELECT NULL::VARCHAR AS record_id, NULL::VARCHAR AS oneid WHERE false)"
        )
        self.sql(
            "CREATE OR REPLACE TEMP TABLE hold AS SELECT p.oneid, c.cluster, count(*) AS n, min(c.record_id) AS first_rec "
            f"FROM clustered c JOIN {prev} p USING (record_id) GROUP BY p.oneid, c.cluster"
        )
        self.sql(
            "CREATE OR REPLACE TEMP TABLE home AS SELECT oneid, cluster FROM (SELECT *, row_number() OVER "
            "(PARTITION BY oneid ORDER BY n DESC, first_rec) AS k FROM hold) WHERE k = 1"
        )
        self.sql(
            "CREATE OR REPLACE TEMP TABLE survivor AS SELECT cluster, min(oneid) AS oneid FROM home GROUP BY cluster"
        )
        start = self.state.next_oneid
        self.sql(
            "CREATE OR REPLACE TEMP TABLE minted AS SELECT cluster, "
            f"{_oneid_sql(f'{start} + row_number() OVER (ORDER BY first_rec) - 1')} AS oneid FROM "
            "(SELECT cluster, min(record_id) AS first_rec FROM clustered GROUP BY cluster) ANTI JOIN survivor USING (cluster)"
        )
        minted = _count(self.con, "SELECT * FROM minted")
        self.state.next_oneid = start + minted
        self.sql(
            "CREATE OR REPLACE TEMP TABLE assigned AS SELECT * FROM survivor UNION ALL SELECT * FROM minted"
        )
        # merges: an old id whose home cluster kept another (smaller) id
        self.sql(
            "CREATE OR REPLACE TEMP TABLE merged_ids AS SELECT h.oneid AS old_oneid, s.oneid AS new_oneid, h.cluster "
            "FROM home h JOIN survivor s USING (cluster) WHERE h.oneid <> s.oneid"
        )
        # splits: records of an old id outside its home cluster
        self.sql(
            "CREATE OR REPLACE TEMP TABLE split_ids AS SELECT DISTINCT h.oneid AS old_oneid, a.oneid AS new_oneid "
            "FROM hold h JOIN home m ON m.oneid = h.oneid AND m.cluster <> h.cluster JOIN assigned a ON a.cluster = h.cluster "
            "WHERE a.oneid <> h.oneid"
        )
        # why a merge happened: the two ids' records share a strong component, or only probabilistic links
        self.sql(
            "CREATE OR REPLACE TEMP TABLE old_sc AS SELECT DISTINCT p.oneid, c.sc FROM clustered c "
            f"JOIN {prev} p USING (record_id) SEMI JOIN merged_ids m ON p.oneid IN (m.old_oneid, m.new_oneid)"
        )
        self.sql(
            "CREATE OR REPLACE TEMP TABLE merge_reason AS SELECT m.old_oneid, m.new_oneid, "
            "CASE WHEN count(b.sc) > 0 THEN 'strong identifier' ELSE 'probabilistic match' END AS reason "
            "FROM merged_ids m LEFT JOIN old_sc a ON a.oneid = m.old_oneid "
            "LEFT JOIN old_sc b ON b.oneid = m.new_oneid AND b.sc = a.sc GROUP BY m.old_oneid, m.new_oneid"
        )
        self._events(
            "SELECT old_oneid, new_oneid, 'merge' AS event, reason FROM merge_reason "
            "UNION ALL SELECT old_oneid, new_oneid, 'split', 'records moved by a full run' FROM split_ids"
        )
        self.sql(
            "CREATE OR REPLACE TEMP TABLE clustered AS SELECT c.*, a.oneid FROM clustered c JOIN assigned a USING (cluster)"
        )
        return (
            _count(self.con, "SELECT * FROM merged_ids"),
            _count(self.con, "SELECT DISTINCT old_oneid FROM split_ids"),
            minted,
        )

    def _events(self, query: str) -> None:
        self.sql(
            f"CREATE OR REPLACE TEMP TABLE events AS SELECT old_oneid, new_oneid, TIMESTAMPTZ {lit(self.now.isoformat())} AS changed_at, "
            f"event, reason, {lit(self.run_id)} AS run_id FROM ({query}) ORDER BY event, old_oneid, new_oneid"
        )

    # ---- incremental run ---------------------------------------------------------------------------------

    def _incremental(self, note: str | None) -> StitchReport:
        self._assign_rids(has_prev=True)
        self._name_frequencies()
        if self.config.probabilistic:
            self.model = json.loads((self.dir / "model.json").read_text(encoding="utf-8"))
        self.sql(
            f"CREATE OR REPLACE TEMP TABLE new_rec AS SELECT * FROM rec WHERE rid >= {self.first_new_rid}"
        )
        n_new = _count(self.con, "SELECT * FROM new_rec")
        self.sql(
            f"CREATE OR REPLACE TEMP VIEW old_status AS SELECT * FROM read_parquet({self.path('value_status')})"
        )
        # holders: the new records, and the existing people holding a value a new record holds
        self._holders("new_rec", f"{NEW_NODE_OFFSET} + rid", "new_holders")
        self.sql("CREATE OR REPLACE TEMP TABLE touched AS SELECT DISTINCT kind, value FROM new_holders")
        # existing records holding a value a new record holds (a few among the many), with their OneID
        holds = " UNION ".join(
            f"SELECT r.rid FROM rec r JOIN touched t ON t.kind = {lit(k)} AND r.{qi(k)} = t.value "
            f"WHERE r.rid < {self.first_new_rid}"
            for k in self.kinds
        )
        self.sql(f"CREATE OR REPLACE TEMP TABLE touched_rec AS SELECT * FROM rec WHERE rid IN ({holds})")
        self._holders(
            "touched_rec",
            "prev_num",
            "old_holders",
            only="touched",
        )
        self.sql(
            "CREATE OR REPLACE TEMP TABLE holders AS SELECT * FROM new_holders UNION ALL SELECT * FROM old_holders"
        )
        self.sql(
            "CREATE OR REPLACE TEMP TABLE was_blocked AS SELECT kind, value FROM old_status "
            "SEMI JOIN touched USING (kind, value) WHERE status = 'blocked'"
        )
        self.sql("CREATE OR REPLACE TEMP TABLE nodes AS SELECT DISTINCT node FROM holders UNION SELECT "
                 f"{NEW_NODE_OFFSET} + rid FROM new_rec")  # fmt: skip
        guard = graph.strong_components(
            self.con,
            nodes="nodes",
            holders="holders",
            max_people=self.config.max_people_per_value,
            conflict_guard=self.config.conflict_guard,
            previously_blocked="was_blocked",
        )
        self.timer.lap("strong links")
        # strong component of every record: existing people keep theirs unless a new record joined them
        self.sql(
            "CREATE OR REPLACE TEMP TABLE all_blocked AS SELECT kind, value FROM old_status WHERE status = 'blocked'"
        )
        self.sql(
            f"CREATE OR REPLACE TEMP TABLE new_sc AS SELECT n.*, s.rep AS sc FROM new_rec n JOIN strong_rep s ON s.node = {NEW_NODE_OFFSET} + n.rid"
        )
        self._model_table("new_sc", "sc", "sp_new", extra_blocked="all_blocked")
        old_rec = "SELECT r.*, coalesce(s.rep, r.prev_num) AS sc FROM {rec} r LEFT JOIN strong_rep s ON s.node = r.prev_num"
        self.sql(
            f"CREATE OR REPLACE TEMP VIEW old_rec AS {old_rec.format(rec=f'(SELECT * FROM rec WHERE rid < {self.first_new_rid})')}"
        )
        # Splink scores new x existing pairs; only the existing records that share a blocking key with a
        # new one can be in such a pair, so they alone go in (a few percent of a large population). The
        # keys are compared on the values as stored (a superset: the model input clears blocked values).
        keys = " UNION ".join(
            f"SELECT o.rid FROM rec o JOIN new_rec n ON {rule.replace('l.', 'o.').replace('r.', 'n.')} "
            f"WHERE o.rid < {self.first_new_rid}"
            for rule in model.candidate_keys(self.config)
        )
        self.sql(
            "CREATE OR REPLACE TEMP TABLE old_cand AS "
            + old_rec.format(rec=f"(SELECT * FROM rec WHERE rid IN ({keys}))")
        )
        self._model_table("old_cand", "sc", "sp_old", extra_blocked="all_blocked")
        self.timer.lap("model input")
        if self.config.probabilistic:
            pairs = model.predict(
                self.con, self.model, self.config.match_probability, new="sp_new", existing="sp_old"
            )
        else:
            pairs = self._no_pairs()
        self.sql(
            "CREATE OR REPLACE TEMP TABLE sp_scored AS SELECT rid, sc FROM sp_new UNION ALL SELECT rid, sc FROM sp_old"
        )
        self.sql(
            "CREATE OR REPLACE TEMP VIEW sp_all AS SELECT rid, sc, first_name, last_name, birth_date FROM sp_new "
            "UNION ALL SELECT rid, sc, first_name, last_name, birth_date FROM old_rec"
        )
        self.timer.lap("probabilistic links")
        self.sql(
            "CREATE OR REPLACE TEMP TABLE sc_edges AS SELECT least(a.sc, b.sc) AS node_l, greatest(a.sc, b.sc) AS node_r, "
            "max(p.match_probability) AS p "
            "FROM prob_pairs p JOIN sp_scored a ON a.rid = p.rid_l JOIN sp_scored b ON b.rid = p.rid_r WHERE a.sc <> b.sc "
            "GROUP BY ALL"
        )
        # the sizes of the components that can be involved: existing people (all their records) and new ones
        self.sql(
            "CREATE OR REPLACE TEMP TABLE sc_sizes AS SELECT sc, count(*) AS n FROM (SELECT sc FROM new_sc UNION ALL "
            "SELECT sc FROM old_rec WHERE sc IN (SELECT node_l FROM sc_edges UNION SELECT node_r FROM sc_edges UNION SELECT sc FROM new_sc)) "
            "GROUP BY sc"
        )
        self.sql("CREATE OR REPLACE TEMP TABLE sc_records AS SELECT sc, record_id FROM new_sc")
        prob_merges, oversized, strong_over = self._final_clusters("sc_sizes", "sc_edges", "sp_all")
        self.timer.lap("clusters")
        # people (existing OneID numbers < NEW_NODE_OFFSET) per final cluster
        self.sql(
            "CREATE OR REPLACE TEMP TABLE node_cluster AS SELECT s.node, f.cluster FROM strong_rep s JOIN final f ON f.sc = s.rep "
            "UNION ALL SELECT f.sc, f.cluster FROM final f WHERE f.sc < $off AND f.sc NOT IN (SELECT node FROM strong_rep)",
            {"off": NEW_NODE_OFFSET},
        )
        # existing people are the nodes below NEW_NODE_OFFSET: their number is their OneID's
        self.sql(
            f"CREATE OR REPLACE TEMP TABLE survivor AS SELECT cluster, {_oneid_sql('min(node)')} AS oneid "
            f"FROM node_cluster WHERE node < {NEW_NODE_OFFSET} GROUP BY cluster"
        )
        self.sql(
            f"CREATE OR REPLACE TEMP TABLE merged_ids AS SELECT DISTINCT {_oneid_sql('n.node')} AS old_oneid, "
            "s.oneid AS new_oneid FROM node_cluster n JOIN survivor s USING (cluster) "
            f"WHERE n.node < {NEW_NODE_OFFSET} AND {_oneid_sql('n.node')} <> s.oneid"
        )
        # a merge is strong when the two people were joined in one strong component
        self.sql(
            "CREATE OR REPLACE TEMP TABLE merge_reason AS SELECT m.old_oneid, m.new_oneid, CASE WHEN sa.rep = sb.rep "
            "THEN 'strong identifier' ELSE 'probabilistic match' END AS reason FROM merged_ids m "
            f"LEFT JOIN strong_rep sa ON sa.node = {_oneid_num_sql('m.old_oneid')} LEFT JOIN strong_rep sb ON sb.node = {_oneid_num_sql('m.new_oneid')}"
        )
        start = self.state.next_oneid
        self.sql(
            "CREATE OR REPLACE TEMP TABLE new_cluster AS SELECT n.rid, n.record_id, f.cluster FROM new_sc n JOIN final f USING (sc)"
        )
        self.sql(
            "CREATE OR REPLACE TEMP TABLE minted AS SELECT cluster, "
            f"{_oneid_sql(f'{start} + row_number() OVER (ORDER BY first_rec) - 1')} AS oneid FROM "
            "(SELECT cluster, min(record_id) AS first_rec FROM new_cluster GROUP BY cluster) ANTI JOIN survivor USING (cluster)"
        )
        minted = _count(self.con, "SELECT * FROM minted")
        self.state.next_oneid = start + minted
        self.sql(
            "CREATE OR REPLACE TEMP TABLE assigned AS SELECT * FROM survivor UNION ALL SELECT * FROM minted"
        )
        self._events("SELECT old_oneid, new_oneid, 'merge' AS event, reason FROM merge_reason")
        # every record's OneID: new records by their cluster; existing ones follow this run's merges
        self.sql(
            "CREATE OR REPLACE TEMP TABLE clustered AS "
            "SELECT r.*, n.cluster, coalesce(s.rep, r.rid) AS sc, a.oneid FROM rec r JOIN new_cluster n USING (rid) "
            f"LEFT JOIN strong_rep s ON s.node = {NEW_NODE_OFFSET} + r.rid JOIN assigned a USING (cluster) "
            "UNION ALL BY NAME SELECT p.rid, p.record_id, p.source, p.row_hash, coalesce(m.new_oneid, p.oneid) AS oneid "
            "FROM prev p LEFT JOIN merged_ids m ON m.old_oneid = p.oneid"
        )
        self.timer.lap("oneids")
        self._write_all(source="clustered", incremental=True)
        return self._report(
            "incremental", note, guard, new_records=n_new, pairs=pairs, prob_merges=prob_merges, oversized=oversized,
            strong_over=strong_over, merged=_count(self.con, "SELECT * FROM merged_ids"), split=0, minted=minted,
        )  # fmt: skip

    def _unchanged(self, note: str | None) -> StitchReport:
        people = int(
            self.sql(f"SELECT count(DISTINCT oneid) FROM read_parquet({self.path('oneid_map')})").fetchone()[
                0
            ]
        )
        report = StitchReport(
            run_id=self.run_id, at=self.now, mode="unchanged", note=note, records=self.n_records, new_records=0,
            records_without_identity=self.n_implicit, people=people, new_oneids=0, merged_oneids=0, split_oneids=0,
            strong_components=0, linked_values=0, conflicted_values=0, blocked_values=0, probabilistic_pairs=0,
            probabilistic_merges=0,
        )  # fmt: skip
        self.no_writes = True
        return report

    # ---- outputs ---------------------------------------------------------------------------------------------

    def _stage(self, name: str, query: str, *, order: str | None = None) -> None:
        target = self.dir / f"{name}.parquet"
        tmp = temp_beside(target)
        ordered = f"SELECT * FROM ({query}) ORDER BY {order}" if order else query
        self.sql(f"COPY ({ordered}) TO {lit(str(tmp))} (FORMAT parquet, ROW_GROUP_SIZE 100000)")
        self.moves.append((tmp, target))
        self.timer.lap(f"write {name}")

    def _write_all(self, *, source: str, incremental: bool = False) -> None:
        """Stage ``oneid_map``, ``merges``, ``value_status`` and ``lookup`` from ``source`` (every record
        with ``rid``, ``row_hash``, ``source`` and ``oneid``)."""
        at = f"TIMESTAMPTZ {lit(self.now.isoformat())}"
        if self._table_exists("prev"):
            self.sql(
                "CREATE OR REPLACE TEMP VIEW old_map AS SELECT record_id, oneid, first_seen, updated_at FROM prev"
            )
        else:
            self.sql(
                "CREATE OR REPLACE TEMP TABLE old_map (record_id VARCHAR, oneid VARCHAR, first_seen TIMESTAMPTZ, "
                "updated_at TIMESTAMPTZ)"
            )
        self._stage(
            "oneid_map",
            f"SELECT c.record_id, c.oneid, c.source, coalesce(m.first_seen, {at}) AS first_seen, "
            f"CASE WHEN m.oneid = c.oneid THEN m.updated_at ELSE {at} END AS updated_at, c.rid, c.row_hash "
            f"FROM {source} c LEFT JOIN old_map m USING (record_id)",
            order=None if incremental else "record_id",
        )
        merges = "SELECT * FROM events"
        if (self.dir / "merges.parquet").exists():
            merges = f"SELECT * FROM read_parquet({self.path('merges')}) UNION ALL {merges}"
        self._stage("merges", merges)
        statuses = "SELECT kind, value, status, n_records AS holders, n_people AS people FROM value_status"
        if incremental:
            statuses += (
                f" UNION ALL SELECT * FROM read_parquet({self.path('value_status')}) "
                "ANTI JOIN value_status USING (kind, value)"
            )
        self._stage("value_status", statuses, order="kind, value")
        # the lookup: values naming one person now, and every record id
        key = "md5_number_lower(kind || chr(31) || value) AS key_lo, md5_number_upper(kind || chr(31) || value) AS key_hi"
        if incremental:
            # values a new record holds are looked at again (with every holder); the others keep their
            # entry, whose OneID `follow` brings up to date after this run's merges
            self.sql(
                f"CREATE OR REPLACE TEMP TABLE scope AS SELECT h.kind, h.value, c.oneid FROM holders h "
                f"JOIN {source} c USING (rid)"
            )
            kept = (
                f"SELECT * FROM read_parquet({self.path('lookup')}) ANTI JOIN "
                f"(SELECT {key} FROM touched) t USING (key_lo, key_hi) UNION ALL "
            )
            records = f"SELECT 'record_id' AS kind, record_id AS value, oneid FROM {source} WHERE rid IN (SELECT rid FROM new_rec)"
            order = None
        else:
            self._holders(source, "rid", "all_holders")
            self.sql(
                f"CREATE OR REPLACE TEMP TABLE scope AS SELECT h.kind, h.value, c.oneid FROM all_holders h "
                f"JOIN {source} c USING (rid)"
            )
            kept = ""
            records = f"SELECT 'record_id' AS kind, record_id AS value, oneid FROM {source}"
            order = "key_lo"
        self._stage(
            "lookup",
            f"{kept}SELECT {key}, {_oneid_num_sql('oneid')} AS oneid_num FROM ("
            "SELECT s.kind, s.value, min(s.oneid) AS oneid FROM scope s "
            "ANTI JOIN (SELECT kind, value FROM value_status WHERE status = 'blocked') b USING (kind, value) "
            f"GROUP BY s.kind, s.value HAVING min(s.oneid) = max(s.oneid) UNION ALL {records})",
            order=order,
        )
        self.sql(
            f"CREATE OR REPLACE TEMP TABLE out_people AS SELECT count(DISTINCT oneid) AS n FROM {source}"
        )

    def _report(
        self,
        mode: str,
        note: str | None,
        guard: graph.GuardResult,
        *,
        new_records: int,
        pairs: int,
        prob_merges: int,
        oversized: list[ClusterExample],
        strong_over: int,
        merged: int,
        split: int,
        minted: int,
    ) -> StitchReport:
        people = int(self.sql("SELECT n FROM out_people").fetchone()[0])
        strong = int(self.sql("SELECT count(DISTINCT rep) FROM strong_rep").fetchone()[0])
        return StitchReport(
            run_id=self.run_id, at=self.now, mode=mode, note=note, records=self.n_records, new_records=new_records,
            records_without_identity=self.n_implicit, people=people, new_oneids=minted, merged_oneids=merged,
            split_oneids=split, strong_components=strong, linked_values=guard.linked_values,
            conflicted_values=guard.conflicted_values, blocked_values=guard.blocked_values,
            blocked_examples=self._value_examples(), probabilistic_pairs=pairs, probabilistic_merges=prob_merges,
            oversized_clusters=oversized, oversized_strong_components=strong_over, model_trained=self.model_trained,
            contradicted_links=self.contradicted_links,
            guard_rounds=guard.rounds,
        )  # fmt: skip

    def publish(self, report: StitchReport) -> None:
        """Move the staged files into place, then the model, the state and the report."""
        if self.no_writes:
            self._write_report(report)
            return
        try:
            if self.model_trained and self.model is not None:
                model_path = self.dir / "model.json"
                tmp = temp_beside(model_path)
                tmp.write_text(json.dumps(self.model, indent=1), encoding="utf-8")
                self.moves.append((tmp, model_path))
            self.state.runs += 1
            self.state.last_run_id = self.run_id
            self.state.last_run_at = self.now
            state_path = self.dir / "state.json"
            tmp = temp_beside(state_path)
            tmp.write_text(self.state.model_dump_json(indent=2), encoding="utf-8")
            self.moves.append((tmp, state_path))
            publish(self.moves)
            self.moves = []
        finally:
            for tmp, _ in self.moves:
                tmp.unlink(missing_ok=True)
        self._write_report(report)

    def _write_report(self, report: StitchReport) -> None:
        if self.inputs.report_path is not None:
            from portrait.files import write_text_atomic

            write_text_atomic(self.inputs.report_path, report.model_dump_json(indent=2))
