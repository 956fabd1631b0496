"""The Portrait service with another adaptive-batching latency budget for ``POST /v1/tags``.

For ``bench_serving.py`` only: the same class, APIs, mounted FastAPI app and middlewares as
``serving.service:Portrait``, but ``/v1/tags`` batches with ``max_latency_ms`` from
``BENCH_TAGS_MAX_LATENCY_MS`` (default 1000) instead of ``serving.service.BATCH_MAX_LATENCY_MS``.
BentoML's dispatcher cancels (503) a queued request once it has waited ``max_latency_ms`` while a batch is
running, so the budget must exceed the time one batch takes; this variant shows the effect.

Start with ``bentoml serve portrait_variant:PortraitVariant --working-dir benchmarks`` (``PORTRAIT_HOME``
set, the project root on ``PYTHONPATH``).
"""

from __future__ import annotations

import os

import attrs
import bentoml

from serving.service import Portrait, add_middlewares, web

MAX_LATENCY_MS = int(os.environ.get("BENCH_TAGS_MAX_LATENCY_MS", "1000"))


class _Variant(Portrait.inner):  # type: ignore[name-defined,misc]
    tags = attrs.evolve(Portrait.inner.__dict__["tags"], max_latency_ms=MAX_LATENCY_MS)


PortraitVariant = bentoml.service(
    name="portrait_variant",
    traffic={"timeout": 60},
    workers=1,
)(bentoml.asgi_app(web)(_Variant))
add_middlewares(PortraitVariant)
