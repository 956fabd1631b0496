"""Write the example's transaction log: ``orders.csv`` and a later batch, ``orders_batch.csv``.

A shop that only records *who bought on which day* (``customer,date``, dates as ``dd/mm/yyyy`` in the
shop's time zone): 800 customers over two years (2023-01-01 .. 2024-12-30). Each customer signs up on a
random day, buys at a personal rate (about monthly on average) for a personal lifetime, then stops; at
most one purchase per customer and day. ``orders_batch.csv`` is "yesterday's orders" (2024-12-31) plus one
order of 2024-12-10 that reached the export late. Deterministic: ``python examples/own_data/generate.py``
writes the same files every time. They are generated, not committed (``.gitignore``): the README runs this
before ``portrait data import``, and the test suite runs it at start (``tests/conftest.py``).
"""

from __future__ import annotations

import csv
import math
import random
from datetime import date, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
START, END = date(2023, 1, 1), date(2024, 12, 30)
BATCH_DAY, LATE_DAY = date(2024, 12, 31), date(2024, 12, 10)
CUSTOMERS = 800
SEED = 7


def purchases(rng: random.Random) -> list[tuple[str, date]]:
    rows: list[tuple[str, date]] = []
    span = (END - START).days
    for i in range(1, CUSTOMERS + 1):
        customer = f"C{i:04d}"
        signup = START + timedelta(days=rng.randint(0, span - 60))
        mean_gap = 30.0 / rng.gammavariate(2.0, 0.5)  # days between purchases, about 30 on average
        last = signup + timedelta(days=rng.expovariate(1 / 420))  # the customer stops after this day
        day = signup
        while day <= min(END, last):
            rows.append((customer, day))
            day += timedelta(days=max(1, math.ceil(rng.expovariate(1 / mean_gap))))
    rows.sort(key=lambda r: (r[1], r[0]))
    return rows


def batch(rng: random.Random, rows: list[tuple[str, date]]) -> list[tuple[str, date]]:
    """Yesterday's orders: customers active in the last month, and one late order of an earlier day."""
    recent = sorted({c for c, d in rows if d >= END - timedelta(days=30)})
    buyers = sorted(rng.sample(recent, k=min(12, len(recent))))
    seen = set(rows)
    late = next(c for c in recent if (c, LATE_DAY) not in seen)
    return [(c, BATCH_DAY) for c in buyers] + [(late, LATE_DAY)]


def write(path: Path, rows: list[tuple[str, date]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh, lineterminator="\n")
        out.writerow(["customer", "date"])
        out.writerows((c, d.strftime("%d/%m/%Y")) for c, d in rows)


def main() -> None:
    rng = random.Random(SEED)
    rows = purchases(rng)
    write(HERE / "orders.csv", rows)
    write(HERE / "orders_batch.csv", batch(rng, rows))


if __name__ == "__main__":
    main()
