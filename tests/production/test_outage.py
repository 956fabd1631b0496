"""Redis outage while serving: fast failures with a reason, then recovery without a new Tagger.

The scenario runs on :class:`serving.tagger.Tagger`, which the BentoML service wraps one per worker: an
``Unavailable`` from it is the service's 503 with the reason (tests/serving cover that mapping). The
BentoML app itself is not built here because BentoML registers its Prometheus metrics process-wide,
so a second app in the same pytest process (tests/serving keeps one per session) cannot start.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from features import store as fs
from serving.tagger import Tagger, Unavailable
from tests.production.conftest import PLAN, SNAPSHOT, production_settings, snapshot_customers
from training import churn
from training import fit as fit_module
from training.train import train_model

pytestmark = pytest.mark.production

STORE_DOWN = "online store unavailable"


def _store_reasons(tagger: Tagger) -> list[str]:
    return [r for r in tagger.readiness() if STORE_DOWN in r]


def test_tagger_survives_redis_outage(prod_home, pg_database, key_prefix, private_redis, monkeypatch):
    monkeypatch.setattr(fit_module, "MAX_ROUNDS", 25)
    settings = production_settings(
        prod_home, postgres_url=pg_database, redis_url=private_redis.url, key_prefix=key_prefix
    )
    train_model(settings, churn.spec(), trials=1, **PLAN)
    end = SNAPSHOT + timedelta(days=1)
    fs.materialize(settings, end=end)
    ids = snapshot_customers(prod_home)[:3]

    tagger = Tagger(settings)
    assert "churn" in tagger.models
    assert tagger._read_vectors(ids) is not None  # noqa: SLF001 - `before` comes from the serving vectors
    before = tagger.tags(ids)
    assert all(t.found and t.churn is not None for t in before)
    assert _store_reasons(tagger) == []

    private_redis.stop()
    started = time.perf_counter()
    with pytest.raises(Unavailable, match=STORE_DOWN) as caught:
        tagger.tags(ids)
    assert time.perf_counter() - started < 3, "a dead Redis must fail fast"
    assert caught.value.status == 503 and str(private_redis.port) in caught.value.message
    started = time.perf_counter()
    assert _store_reasons(tagger), "readiness must report the store"
    assert time.perf_counter() - started < 3

    private_redis.start()  # same port, empty: it keeps nothing on disk
    empty = tagger.tags(ids)
    assert [t.found for t in empty] == [False] * len(ids)
    assert _store_reasons(tagger) == []

    fs.materialize(settings, end=end, incremental=False)
    after = tagger.tags(ids)
    assert all(t.found for t in after)
    assert [t.churn for t in after] == [t.churn for t in before]
