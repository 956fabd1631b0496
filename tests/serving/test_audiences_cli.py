"""``portrait audience …`` on the session's trained workspace, and one error line for every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from portrait.audience import AudienceStore
from portrait.cli import app

runner = CliRunner()


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def pop(api) -> pd.DataFrame:
    """The population (built by the service if no test did yet; the CLI reads the same cache)."""
    import bentoml

    from serving.audiences import book_of

    return pd.read_parquet(book_of(bentoml.get_current_service()).population.path)


def ids_file(path: Path, ids: list[str]) -> Path:
    path.write_text("customer_id\n" + "\n".join(ids) + "\n")
    return path


def test_create_show_export_insight_holdout_outcomes_delete(served, pop, tmp_path: Path):
    store = AudienceStore.of(served)
    before = {r.id for r in store.list()}
    flt = json.dumps(
        {
            "and": [
                {"field": "churn_tier", "op": "eq", "value": "high"},
                {"field": "orders_365d", "op": ">=", "value": 1},
            ]
        }
    )
    code, output = run("audience", "create", "--filter", flt, "--dry-run")
    assert code == 0 and "dry run: nothing stored" in output, output
    assert {r.id for r in store.list()} == before
    code, output = run(
        "audience", "create", "--filter", flt, "--name", "cli high churn", "--control-share", "0.2"
    )
    assert code == 0, output
    (record,) = [r for r in store.list() if r.id not in before]
    assert record.name == "cli high churn" and record.creator.startswith("cli") and record.holdout is not None
    assert output.splitlines()[0].startswith(record.id)
    code, output = run("audience", "list")
    assert code == 0 and record.id in output
    code, output = run("audience", "population")
    assert code == 0 and f"{len(pop):,} customers" in output
    code, output = run("audience", "show", record.id)
    assert code == 0 and "holdout:" in output
    out_file = tmp_path / "members.parquet"
    code, output = run("audience", "export", record.id, "--out", str(out_file))
    assert code == 0, output
    members = pd.read_parquet(out_file)
    assert len(members) == record.size and set(members.group) == {"treatment", "control"}
    html = tmp_path / "insight.html"
    code, output = run("audience", "insight", record.id, "--html", str(html))
    assert code == 0 and "top traits" in output and html.read_text().startswith("<!DOCTYPE html>")
    treated = members[members.group == "treatment"].customer_id.tolist()
    code, output = run(
        "audience", "outcomes", record.id, "--converted", str(ids_file(tmp_path / "c.csv", treated[:20]))
    )
    assert code == 0 and "incremental lift" in output, output
    code, output = run("audience", "delete", record.id)
    assert code == 0 and not store.exists(record.id)
    actions = [x["operation"] for x in store.audit_trail(record.id)]
    assert actions == ["create", "holdout", "export", "outcomes", "delete"]


def test_plan_and_lookalike_from_the_cli(served, pop, tmp_path: Path):
    seed = ids_file(tmp_path / "seed.csv", pop[pop.churn_tier == "high"].customer_id.iloc[:150].tolist())
    code, output = run("audience", "plan", "--seed", str(seed))
    assert code == 0 and "narrow" in output and "balanced" in output and "broad" in output, output
    assert "90% interval" in output and "overlapping segments" in output, output
    code, output = run("audience", "create", "--seed", str(seed), "--preset", "balanced", "--name", "lal")
    assert code == 0 and "(lookalike)" in output, output


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["create"], "give exactly one of --filter, --ids or --seed"),
        (["create", "--filter", "{nope"], "not valid JSON"),
        (["create", "--filter", '{"field": "x", "op": "like"}'], "bad filter"),
        (
            ["create", "--filter", '{"field": "spend_356d", "op": "gt", "value": 1}'],
            "unknown field 'spend_356d'",
        ),
        (["create", "--filter", "@{home}/missing.json"], "does not exist"),
        (["create", "--ids", "{home}/missing.csv"], "does not exist"),
        (["create", "--ids", "{home}/ghosts.csv"], "none of the 2 customer ids"),
        (["create", "--seed", "{home}/ghosts.csv"], "exactly one of --size, --fraction or --preset"),
        (["create", "--seed", "{home}/ghosts.csv", "--preset", "huge"], "--preset must be one of"),
        (["create", "--seed", "{home}/ghosts.csv", "--size", "10"], "none of the 2 seed ids"),
        (
            ["create", "--filter", '{"field": "spend_365d", "op": "gt", "value": 0}', "--control-share", "2"],
            "--control-share",
        ),
        (["show", "aud_0000000000000000"], "unknown audience"),
        (["export", "nope", "--out", "{home}/x.csv"], "unknown audience"),
        (["export", "aud_0000000000000000", "--out", "{home}/x.txt", "--format", "xlsx"], "csv or parquet"),
        (["delete", "aud_0000000000000000"], "unknown audience"),
        (["insight", "aud_0000000000000000"], "unknown audience"),
        (["holdout", "aud_0000000000000000", "--control-share", "0.1"], "unknown audience"),
        (["outcomes", "aud_0000000000000000", "--converted", "{home}/ghosts.csv"], "unknown audience"),
        (["plan", "--seed", "{home}/ghosts.csv"], "none of the 2 seed ids"),
        (["plan", "--seed", "{home}/few.csv"], "at least 100"),
    ],
)
def test_bad_input_gets_one_error_line_and_a_non_zero_exit(served, pop, tmp_path: Path, args, problem):
    ids_file(tmp_path / "ghosts.csv", ["ghost-1", "ghost-2"])
    ids_file(tmp_path / "few.csv", pop.customer_id.iloc[:20].tolist())
    code, output = run("audience", *[a.replace("{home}", str(tmp_path)) for a in args])
    assert code != 0, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and problem in errors[0], output
    assert "Traceback" not in output
