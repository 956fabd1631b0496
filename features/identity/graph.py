"""Graph steps of stitching, in DuckDB: connected components and the shared-identifier guards.

Nodes are BIGINT ids: identity records in a full run; in an incremental run the existing people (their
OneID number) and the new records. ``holders(node, rid, kind, value, strong, birth_date, full_name)``
says which node (and record) carries which identifier value.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import duckdb

from features.identity.normalise import run

logger = logging.getLogger(__name__)

MAX_BIRTH_DATES_CHECKED = 20
"""A strong value held with more distinct birth dates than this is a conflict without pairwise checks."""


def components(con: duckdb.DuckDBPyConnection, nodes: str, edges: str, out: str) -> None:
    """Temp table ``out(node, rep)``: the connected component of every node of ``nodes`` (column ``node``)
    over ``edges`` (``node_l``, ``node_r``), named by its smallest node (Splink's connected components)."""
    n_edges = run(con, f"SELECT count(*) FROM {edges}").fetchone()[0]
    if n_edges == 0:
        run(con, f"CREATE OR REPLACE TEMP TABLE {out} AS SELECT node, node AS rep FROM {nodes}")
        return
    from splink import DuckDBAPI
    from splink.clustering import cluster_pairwise_predictions_at_threshold

    # Nodes without an edge are their own component: only the others go through Splink.
    run(
        con,
        f"CREATE OR REPLACE TEMP TABLE {out}__nodes AS SELECT node_l AS node FROM {edges} UNION SELECT node_r FROM {edges}",
    )
    db_api = DuckDBAPI(con)
    clusters = cluster_pairwise_predictions_at_threshold(
        f"{out}__nodes",
        edges,
        db_api,
        node_id_column_name="node",
        edge_id_column_name_left="node_l",
        edge_id_column_name_right="node_r",
    )
    run(
        con,
        f"CREATE OR REPLACE TEMP TABLE {out} AS SELECT n.node, coalesce(c.rep, n.node) AS rep FROM {nodes} n "
        f"LEFT JOIN (SELECT node, min(node) OVER (PARTITION BY cluster_id) AS rep FROM {clusters.physical_name}) c "
        "USING (node)",
    )
    clusters.drop_table_from_database_and_remove_from_cache()
    db_api.delete_tables_created_by_splink_from_db()
    run(con, f"DROP TABLE {out}__nodes")


def _star_edges(con: duckdb.DuckDBPyConnection, rows: str, node: str, out: str) -> None:
    """``out(node_l, node_r)``: every ``node`` of ``rows`` (kind, value, node) to the smallest of its value."""
    run(con, f"CREATE OR REPLACE TEMP TABLE star_in AS SELECT kind, value, {node} AS node FROM {rows}")
    run(
        con,
        f"CREATE OR REPLACE TEMP TABLE {out} AS SELECT DISTINCT x.node AS node_l, m.first AS node_r FROM star_in x "
        "JOIN (SELECT kind, value, min(node) AS first FROM star_in GROUP BY kind, value) m USING (kind, value) "
        "WHERE x.node <> m.first",
    )


@dataclass
class GuardResult:
    """What the guards decided (temp tables ``value_status`` and ``strong_rep`` hold the details)."""

    linked_values: int
    blocked_values: int
    conflicted_values: int
    rounds: int


def strong_components(
    con: duckdb.DuckDBPyConnection,
    *,
    nodes: str,
    holders: str,
    max_people: int,
    conflict_guard: bool,
    previously_blocked: str | None = None,
) -> GuardResult:
    """Link nodes by shared strong values, with the guards; fills temp tables:

    * ``strong_rep(node, rep)``: each node's strong component;
    * ``value_status(kind, value, status, n_nodes, n_records, n_people)`` for every value held by two or
      more nodes or records:
      ``linked`` (a strong value that links), ``conflict`` (a strong value whose holders carry clearly
      different birth dates: evidence only), ``blocked`` (seen on more than ``max_people`` people: never
      links, never evidence), ``weak`` (evidence only).

    People are counted on strong components: a value's people are the distinct components of its holders
    when every other linkable value links, holders with the same full name counting once (values held by
    at most ``max_people`` nodes link at once; a value on more nodes is re-counted that way and links once
    it is on at most ``max_people`` people, until nothing changes). So six records of one person sharing
    only an e-mail address still link, and a shop tablet used by thirty named customers does not.
    ``previously_blocked(kind, value)``: values that stay blocked.
    """
    # Most values sit on one record: count distinct holders only for the others.
    run(
        con,
        f"CREATE OR REPLACE TEMP TABLE multi AS SELECT kind, value FROM {holders} GROUP BY kind, value "
        "HAVING count(*) > 1",
    )
    run(
        con,
        "CREATE OR REPLACE TEMP TABLE vstat AS SELECT kind, value, bool_or(strong) AS strong, count(*) AS n_nodes, "
        "sum(n)::BIGINT AS n_records FROM (SELECT kind, value, node, bool_or(strong) AS strong, count(*) AS n "
        f"FROM {holders} SEMI JOIN multi USING (kind, value) GROUP BY kind, value, node) GROUP BY kind, value",
    )
    if previously_blocked:
        run(
            con,
            f"CREATE OR REPLACE TEMP TABLE vstat AS SELECT v.*, p.kind IS NOT NULL AS was_blocked FROM vstat v "
            f"LEFT JOIN (SELECT DISTINCT kind, value FROM {previously_blocked}) p USING (kind, value)",
        )
    else:
        run(con, "CREATE OR REPLACE TEMP TABLE vstat AS SELECT *, false AS was_blocked FROM vstat")
    if conflict_guard:
        run(
            con,
            f"CREATE OR REPLACE TEMP TABLE bds AS SELECT DISTINCT h.kind, h.value, h.birth_date FROM {holders} h "
            "JOIN vstat v USING (kind, value) WHERE v.strong AND h.birth_date IS NOT NULL",
        )
        run(
            con,
            "CREATE OR REPLACE TEMP TABLE conflicted AS "
            f"SELECT kind, value FROM bds GROUP BY kind, value HAVING count(*) > {MAX_BIRTH_DATES_CHECKED} "
            "UNION SELECT DISTINCT a.kind, a.value FROM (SELECT * FROM bds WHERE (kind, value) IN "
            f"(SELECT (kind, value) FROM bds GROUP BY kind, value HAVING count(*) BETWEEN 2 AND {MAX_BIRTH_DATES_CHECKED})) a "
            "JOIN bds b ON a.kind = b.kind AND a.value = b.value AND a.birth_date < b.birth_date "
            "WHERE levenshtein(strftime(a.birth_date, '%Y-%m-%d'), strftime(b.birth_date, '%Y-%m-%d')) > 1 "
            "AND NOT (day(a.birth_date) = month(b.birth_date) AND month(a.birth_date) = day(b.birth_date) "
            "AND year(a.birth_date) = year(b.birth_date))",
        )
    else:
        run(con, "CREATE OR REPLACE TEMP TABLE conflicted (kind VARCHAR, value VARCHAR)")
    run(
        con,
        "CREATE OR REPLACE TEMP TABLE linkable AS SELECT v.kind, v.value, v.n_nodes FROM vstat v "
        "ANTI JOIN conflicted c USING (kind, value) WHERE v.strong AND NOT v.was_blocked",
    )
    run(
        con,
        f"CREATE OR REPLACE TEMP TABLE safe AS SELECT kind, value FROM linkable WHERE n_nodes <= {max_people}",
    )
    # Round 1 links every value held by at most max_people nodes; each later round counts the people
    # of the bigger values on the components so far and links those now on few enough, joining the
    # components themselves (a much smaller graph) until nothing changes.
    _star_edges(con, f"{holders} SEMI JOIN safe USING (kind, value)", "node", "strong_edges")
    components(con, nodes, "strong_edges", "strong_rep")
    rounds = 1
    while True:
        run(
            con,
            "CREATE OR REPLACE TEMP TABLE people AS SELECT h.kind, h.value, "
            "count(DISTINCT coalesce(h.full_name, 'component ' || s.rep)) AS n_people "
            f"FROM {holders} h JOIN strong_rep s USING (node) "
            f"WHERE (h.kind, h.value) IN (SELECT (kind, value) FROM vstat WHERE n_nodes > {max_people}) "
            "GROUP BY h.kind, h.value",
        )
        run(
            con,
            "CREATE OR REPLACE TEMP TABLE newly AS SELECT l.kind, l.value FROM linkable l JOIN people p USING (kind, value) "
            f"ANTI JOIN safe s USING (kind, value) WHERE p.n_people <= {max_people}",
        )
        added = run(con, "SELECT count(*) FROM newly")[0][0]
        if not added:
            break
        rounds += 1
        logger.debug("guard round %d: %d more values link once counted by people", rounds, added)
        run(con, "INSERT INTO safe SELECT * FROM newly")
        _star_edges(
            con,
            f"(SELECT h.kind, h.value, s.rep FROM {holders} h JOIN strong_rep s USING (node) "
            "SEMI JOIN newly USING (kind, value))",
            "rep",
            "rep_edges",
        )
        run(
            con,
            "CREATE OR REPLACE TEMP TABLE rep_nodes AS SELECT node_l AS node FROM rep_edges UNION SELECT node_r FROM rep_edges",
        )
        components(con, "rep_nodes", "rep_edges", "rep_rep")
        run(
            con,
            "CREATE OR REPLACE TEMP TABLE strong_rep AS SELECT s.node, coalesce(r.rep, s.rep) AS rep "
            "FROM strong_rep s LEFT JOIN rep_rep r ON r.node = s.rep",
        )
    run(
        con,
        "CREATE OR REPLACE TEMP TABLE value_status AS SELECT v.kind, v.value, "
        "CASE WHEN s.kind IS NOT NULL THEN 'linked' "
        f"WHEN v.was_blocked OR coalesce(p.n_people, v.n_nodes) > {max_people} THEN 'blocked' "
        "WHEN v.strong THEN 'conflict' ELSE 'weak' END AS status, v.n_nodes, v.n_records, "
        "coalesce(p.n_people, v.n_nodes) AS n_people "
        "FROM vstat v LEFT JOIN safe s USING (kind, value) LEFT JOIN people p USING (kind, value)",
    )
    counts = dict(run(con, "SELECT status, count(*) FROM value_status GROUP BY status").fetchall())
    return GuardResult(
        linked_values=int(counts.get("linked", 0)),
        blocked_values=int(counts.get("blocked", 0)),
        conflicted_values=int(counts.get("conflict", 0)),
        rounds=rounds,
    )
