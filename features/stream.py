"""`portrait stream`: events and transactions from a message broker, through the same ingest as HTTP.

FastStream speaks Redis Streams (default: ``settings.broker_url`` or ``settings.redis_url``) and Kafka
(``kafka://host:port``, with ``faststream[kafka]`` installed), so a CDP on Kafka switches by configuration.
A message is one JSON item: ``{"kind": "event", ...event fields}`` or ``{"kind": "transaction", ...}``
(the fields of ``POST /v1/events``' items).

Delivery is at least once and deduplicated: a batch is acknowledged only after :func:`features.realtime.ingest`
has stored it durably in the landing zone, whose key (event id / order line) drops a redelivered item. On
Redis, a second subscriber claims messages another consumer read but never acknowledged (it was killed) once
they have been pending for ``stream_claim_idle_ms``. Rejected items are appended, with their reason, to
``data/quarantine/stream.jsonl``: nothing is dropped silently.

A message that cannot be stored is delivered again (claimed after ``stream_claim_idle_ms``), one message at a
time, so the rest of its batch goes through. On Redis, one that has failed ``stream_max_deliveries`` deliveries
(a poison message, or a store down for that long) is set aside: appended with its last error to
``data/quarantine/stream_dead.jsonl`` and acknowledged, so it no longer logs an error every few seconds.
:func:`replay` (``portrait stream --replay``) publishes the set-aside messages again; what had landed before
is a duplicate, and its customers are pushed again.

FastStream's own lines (start, stop, one per message received and processed) go to :data:`broker_log` at
debug level instead of its coloured handlers on stdout and stderr: a running consumer logs one line per batch
(:func:`handle`), and ``portrait --verbose stream`` shows FastStream's as well.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from features.landing import Landing
from features.realtime import IngestResult, ingest
from portrait.settings import Settings

logger = logging.getLogger(__name__)


class _ServiceLines(logging.LoggerAdapter):  # type: ignore[type-arg]
    """FastStream's service lines: its INFO (some hard-coded) at debug level, its warnings and errors as
    they are."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        super().log(logging.DEBUG if level <= logging.INFO else level, msg, *args, **kwargs)


broker_log = _ServiceLines(logging.getLogger(f"{__name__}.broker"))

GROUP = "portrait"
BATCH = 1000
DEAD_LETTERS = "stream_dead.jsonl"


def broker_url(settings: Settings) -> str:
    return settings.broker_url or settings.redis_url


def consumer_name(settings: Settings) -> str:
    return settings.stream_consumer or f"{socket.gethostname()}-{os.getpid()}"


def handle(settings: Settings, messages: Sequence[Any], store: Any, landing: Landing) -> IngestResult:
    """Ingest one batch of broker messages (decoded JSON items)."""
    events: list[dict[str, Any]] = []
    transactions: list[dict[str, Any]] = []
    malformed: list[tuple[Any, str]] = []
    for message in messages:
        item = dict(message) if isinstance(message, dict) else None
        kind = item.pop("kind", "event") if item is not None else None
        if item is None or kind not in ("event", "transaction"):
            malformed.append(
                (message, "malformed_message: expected a JSON object with kind event|transaction")
            )
        else:
            (events if kind == "event" else transactions).append(item)
    try:
        result = ingest(settings, events, transactions, store=store, landing=landing)
    except Exception as exc:  # noqa: BLE001 - any failure: the batch stays unacknowledged, then redelivered
        from faststream.exceptions import NackMessage

        logger.error(  # noqa: TRY400 - one line; FastStream logs NackMessage at debug
            "stream batch of %d messages not stored (%s: %s): left unacknowledged, to be delivered again",
            len(messages),
            type(exc).__name__,
            exc,
        )
        raise NackMessage from exc
    rejected = [(([*events, *transactions])[i], reason) for i, reason in result.rejected] + malformed
    if rejected:
        _quarantine(settings, rejected)
    logger.info(
        "stream batch: %d accepted, %d duplicates, %d rejected",
        result.accepted,
        result.duplicates,
        len(rejected),
    )
    return result


def set_aside(
    settings: Settings, message: Any, deliveries: int, error: BaseException, message_id: str
) -> None:
    """Dead-letter a message that failed ``deliveries`` times (see the module doc)."""
    reason = f"undeliverable: {deliveries} deliveries failed, the last with {type(error).__name__}: {error}"
    _quarantine(settings, [(message, reason)], DEAD_LETTERS)
    logger.error(
        "stream message %s set aside after %d failed deliveries (%s: %s) in %s; `portrait stream --replay` "
        "sends it again",
        message_id,
        deliveries,
        type(error).__name__,
        error,
        settings.quarantine_dir / DEAD_LETTERS,
    )


def replay(settings: Settings) -> int:
    """Publish the set-aside messages again, oldest first, and remove them from the quarantine.

    The file is renamed before it is read, so a consumer setting more messages aside meanwhile starts a new one;
    a replay that fails part way leaves the renamed file, which the next replay sends again (duplicates land
    once)."""
    import asyncio

    folder = settings.quarantine_dir
    current = folder / DEAD_LETTERS
    if current.exists():
        current.rename(folder / f"{current.stem}.replaying-{datetime.now(UTC):%Y%m%dT%H%M%S%f}.jsonl")
    files = sorted(folder.glob(f"{current.stem}.replaying-*.jsonl"))
    messages: list[Any] = []
    for path in files:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                messages.append(json.loads(line)["item"])
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}, line {number}: not a set-aside message ({exc})") from None
    if messages:
        asyncio.run(publish(settings, messages))
    for path in files:
        path.unlink()
    return len(messages)


def _quarantine(settings: Settings, rejected: Sequence[tuple[Any, str]], name: str = "stream.jsonl") -> None:
    path = settings.quarantine_dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    at = datetime.now(UTC).isoformat()
    with path.open("a", encoding="utf-8") as fh:
        for item, reason in rejected:
            fh.write(json.dumps({"at": at, "reason": reason, "item": item}, default=str) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def build_app(settings: Settings, store: Any) -> Any:
    """The FastStream application consuming ``settings.events_stream`` into the landing zone and the store."""
    from faststream import AckPolicy, FastStream

    landing = Landing(settings)
    url = broker_url(settings)
    if url.startswith("kafka://"):
        try:
            from faststream.kafka import KafkaBroker
        except ImportError as exc:  # pragma: no cover - an optional extra
            raise RuntimeError("Kafka needs `pip install faststream[kafka]`") from exc
        broker = KafkaBroker(url.removeprefix("kafka://"), logger=broker_log)

        @broker.subscriber(
            settings.events_stream,
            group_id=GROUP,
            batch=True,
            max_records=BATCH,
            auto_commit=False,
            ack_policy=AckPolicy.NACK_ON_ERROR,
        )
        async def consume_kafka(messages: list[Any]) -> None:
            handle(settings, messages, store, landing)

        return FastStream(broker, logger=broker_log)

    from faststream.redis import RedisBroker, StreamSub

    ensure_group(url, settings.events_stream)
    broker = RedisBroker(url, logger=broker_log)
    name = consumer_name(settings)

    # Bodies are typed Any: `handle` quarantines what is not a JSON object (a type FastStream checked would fail
    # the whole batch at every delivery, and the message would never be acknowledged).
    async def consume_batch(messages: list[Any]) -> None:
        handle(settings, messages, store, landing)

    broker.subscriber(
        stream=StreamSub(settings.events_stream, group=GROUP, consumer=name, batch=True, max_records=BATCH),
        ack_policy=AckPolicy.NACK_ON_ERROR,
    )(consume_batch)

    from faststream import Context
    from faststream.exceptions import NackMessage

    the_message = Context("message")  # FastStream's message: its id, its delivery count

    async def reclaim(message: Any, raw: Any = the_message) -> None:
        try:
            handle(settings, [message], store, landing)
        except NackMessage as exc:
            deliveries = await raw.get_delivery_count()
            if deliveries < settings.stream_max_deliveries:
                raise
            ids = raw.raw_message.get("message_ids") or [b"?"]
            set_aside(settings, message, deliveries, exc.__cause__ or exc, ids[0].decode())

    broker.subscriber(  # messages a dead consumer read but never acknowledged
        stream=StreamSub(
            settings.events_stream,
            group=GROUP,
            consumer=name,
            min_idle_time=settings.stream_claim_idle_ms,
            polling_interval=1000,
        ),
        ack_policy=AckPolicy.NACK_ON_ERROR,
    )(reclaim)
    return FastStream(broker, logger=broker_log)


def consume(settings: Settings, store: Any) -> None:
    """Run the consumer until SIGINT or SIGTERM (FastStream stops it gracefully: the batch in hand is
    stored and acknowledged first)."""
    import asyncio

    asyncio.run(build_app(settings, store).run())


def ensure_group(url: str, stream: str) -> None:
    """Create the consumer group at the start of the stream (FastStream would create it at its end, so
    messages published before the first consumer started would be skipped); an existing group is kept."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=5)
    try:
        client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
    finally:
        client.close()


async def publish(settings: Settings, items: Sequence[Any]) -> None:
    """Put items on the stream (tests, the demo, benchmarks; a CDP publishes its own)."""
    from faststream.redis import RedisBroker

    async with RedisBroker(broker_url(settings)) as broker:
        for item in items:
            await broker.publish(item, stream=settings.events_stream)
