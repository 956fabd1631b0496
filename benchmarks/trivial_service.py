"""A trivial BentoML service: the framework's own floor for ``bench_serving.py``.

Same BentoML settings as ``serving.service:Portrait`` (one worker, sync APIs run in BentoML's thread
pool) but no work: the APIs echo the list of strings they receive. ``/v1/echo`` is a plain API,
``/v1/echo_batch`` is batchable with the same batching parameters as ``/v1/tags``.

Start with ``bentoml serve trivial_service:Trivial --working-dir benchmarks``.
"""

from __future__ import annotations

import bentoml

MAX_IDS = 10_000


@bentoml.service(name="trivial", traffic={"timeout": 60}, workers=1)
class Trivial:
    @bentoml.api(route="/v1/echo")
    def echo(self, customer_ids: list[str]) -> list[str]:
        return customer_ids

    @bentoml.api(route="/v1/echo_batch", batchable=True, max_batch_size=MAX_IDS, max_latency_ms=30)
    def echo_batch(self, customer_ids: list[str]) -> list[str]:
        return customer_ids
