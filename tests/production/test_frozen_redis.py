"""A frozen Redis (``kill -STOP``: it accepts connections and never answers) fails a ``/v1/tags`` read with the
503 reason within about the configured ``redis_timeout_s``, not a multiple of it.

A private ``redis-server`` on a free port is frozen (the machine's shared Redis is never touched) and thawed
and stopped afterwards. The scenario runs on :class:`serving.tagger.Tagger`, as ``tests/production/test_outage.py``
does: the service's 503 for ``/v1/tags`` is ``Unavailable`` from ``Tagger.tags`` followed by
``Tagger.readiness()`` for the body's reasons (``serving.middleware.ServiceUnavailableMiddleware``), so both
are timed together.
"""

from __future__ import annotations

import os
import signal
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


def test_frozen_redis_fails_a_tags_read_within_the_timeout(
    prod_home, pg_database, key_prefix, private_redis, monkeypatch
):
    monkeypatch.setattr(fit_module, "MAX_ROUNDS", 25)
    settings = production_settings(
        prod_home, postgres_url=pg_database, redis_url=private_redis.url, key_prefix=key_prefix
    ).model_copy(update={"redis_timeout_s": 1.0})
    train_model(settings, churn.spec(), trials=1, **PLAN)
    fs.materialize(settings, end=SNAPSHOT + timedelta(days=1))
    ids = snapshot_customers(prod_home)[:3]
    tagger = Tagger(settings)
    assert all(t.found for t in tagger.tags(ids))  # the pooled connection is open before the freeze

    assert private_redis.process is not None
    os.kill(private_redis.process.pid, signal.SIGSTOP)
    try:
        started = time.perf_counter()
        with pytest.raises(Unavailable, match=STORE_DOWN) as caught:
            tagger.tags(ids)
        reasons = tagger.readiness()
        seconds = time.perf_counter() - started
    finally:
        os.kill(private_redis.process.pid, signal.SIGCONT)
    assert caught.value.status == 503
    assert "Timeout" in caught.value.message  # the kind: a timeout, not a refused connection
    assert any(STORE_DOWN in r and "Timeout" in r for r in reasons), reasons
    # 1 s setting: one timeout of the read, none for the 503's reasons; before the fix 4.0 s (2 x 2 s).
    assert seconds < 3, f"{seconds:.1f} s for a 1 s redis_timeout_s"
    print(f"frozen Redis: 503 reason after {seconds:.2f} s (redis_timeout_s=1.0)")

    assert all(t.found for t in tagger.tags(ids))  # thawed: the same Tagger answers again
