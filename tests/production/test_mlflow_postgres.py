"""MLflow in the production profile: tracking and model registry on PostgreSQL, artefacts in the workspace."""

from __future__ import annotations

import mlflow
import pytest
import sqlalchemy as sa
from mlflow import MlflowClient

from portrait.registry import CHAMPION, connect
from tests.production.conftest import PLAN, production_settings
from training import churn
from training import fit as fit_module
from training.dataset import build_training_set
from training.train import plan_for, train_model

pytestmark = pytest.mark.production


def test_train_registers_champion_in_postgres(prod_home, servers, pg_database, key_prefix, monkeypatch):
    monkeypatch.setattr(fit_module, "MAX_ROUNDS", 25)  # a real fit, kept short
    settings = production_settings(
        prod_home, postgres_url=pg_database, redis_url=servers.redis_url, key_prefix=key_prefix
    )
    assert settings.tracking_uri == pg_database
    spec = churn.spec()
    ts = build_training_set(settings, "churn", spec.label, plan_for(settings, spec, **PLAN))  # Feast on PG
    outcome = train_model(settings, spec, trials=1, training_set=ts)
    assert outcome.decision.promoted and outcome.version == "1"

    client = connect(settings)
    mv = client.get_model_version_by_alias("churn", CHAMPION)
    assert str(mv.version) == "1" and mv.tags["status"] == "ready" and mv.tags["role"] == CHAMPION
    model = mlflow.pyfunc.load_model("models:/churn@champion").unwrap_python_model()
    assert model.feature_service == "churn_v1" and model.features
    assert (prod_home / "mlruns" / "artifacts" / "churn").is_dir()  # default artefact root: the workspace

    engine = sa.create_engine(pg_database)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()  # migrated
        aliases = conn.execute(sa.text("SELECT name, alias, version FROM registered_model_aliases")).all()
    engine.dispose()
    assert [tuple(a) for a in aliases] == [("churn", CHAMPION, 1)]

    # A failure at the very last registration step (the alias write) leaves the champion where it was
    # and no half-registered version behind.
    def refuse(self, name, alias, version):  # noqa: ANN001, ANN202
        raise mlflow.exceptions.MlflowException("injected failure while setting the alias")

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", refuse)
    with pytest.raises(mlflow.exceptions.MlflowException, match="injected failure"):
        train_model(settings, spec, trials=1, training_set=ts)
    monkeypatch.undo()
    client = connect(settings)
    assert [str(v.version) for v in client.search_model_versions("name = 'churn'")] == ["1"]
    assert str(client.get_model_version_by_alias("churn", CHAMPION).version) == "1"
