"""Loaders that map the real public datasets onto the raw-data contract.

Each loader reads one dataset file and writes ``customers.parquet``, ``transactions.parquet`` and
``events.parquet`` into ``raw_dir`` with exactly :data:`features.contract.ARROW_SCHEMAS`. The
loaders *map*; rows that the contract can judge (no customer id, negative quantity on a purchase,
exact duplicates, ...) are written as they are, and :func:`features.validate.validate_workspace`
quarantines them with a reason. The loaders set aside only what the contract cannot see (lines
that are not products; exact duplicate source lines once the columns that tell lines apart are
gone), always into a quarantine file with a reason, never silently. Every file is written to a
temporary file beside its target and all of a loader's files are moved into place together
(``os.replace``) once all were written.

One import path
---------------
The mapping onto the contract goes through the importer (:func:`features.importer.stage_relations`),
the code behind ``portrait data import``: :func:`online_retail_mapping` and :func:`cdnow_mapping` are
what a mapping file would say (columns, expressions, constants, derived order ids, customers from
activity, ``merge_lines``, ``amount_decimals``). What a mapping cannot express stays a loader
**pre-step** in SQL or pandas, run before the mapping, over the same connection:

* Online Retail: setting aside non-product and exact duplicate lines (a mapping maps rows, it does
  not judge them), and the customers table, which is computed over *all* lines read (also those set
  aside: a customer's first invoice may be a postage line) with the most frequent country -- an
  aggregate over another table than the transactions the mapping writes.
* CDNOW: reading the whitespace-aligned text file (neither CSV nor Parquet) and checking its header
  and every value, so a wrong file fails naming the line at fault.

Online Retail (``online_retail.parquet``, UCI)
----------------------------------------------
* ``order_id`` = ``InvoiceNo``; ``customer_id`` = ``str(int(CustomerID))``, or null when the line
  has none (kept, so validation quarantines it as ``missing_customer_id``);
  ``quantity`` = ``Quantity``; ``amount`` = ``Quantity * UnitPrice`` rounded to 3 decimals (prices
  have at most 3, so this only removes float noise such as 15.299999999999999);
  ``is_return`` = ``InvoiceNo`` starts with ``C`` (a cancellation: negative quantity and amount).
* ``ts`` = ``InvoiceDate`` taken as UTC. The source is naive UK local time, so lines between
  2011-03-27 and 2011-10-30 (British Summer Time) are one hour later than the true UTC instant; the
  contract's rule "naive inputs are taken as UTC" is applied as is.
* ``category``: the dataset has none; :data:`ONLINE_RETAIL_CATEGORIES` derives a coarse one from
  keywords of ``Description`` (first matching rule wins; no match -> ``other``; no description ->
  null).
* Set aside into ``<raw_dir>/../quarantine/online_retail_loader.parquet`` (original columns +
  ``reason`` + ``source_row``, the 0-based line number in the file), first matching reason wins:

  - ``non_product_line``: a non-product stock code (:data:`NON_PRODUCT_STOCK_CODES`: postage,
    carriage, manual adjustments, discounts, bank and marketplace fees, samples, commission,
    bad-debt adjustments, gift vouchers); these are not customer purchases.
  - ``duplicate_line``: an exact copy (all eight columns) of an earlier line; the first is kept.
    This is the contract's ``duplicate`` rule, applied here because after mapping it can no longer
    be told apart from the next case.

* ``transactions`` has one row per invoice and category (``order_id, customer_id, ts, category,
  is_return``) with the summed ``quantity`` and ``amount`` of its product lines (``lines_merged``
  counts the lines folded into another). The contract has no product column, so two different
  products of one invoice with the same category, quantity and price would otherwise become
  identical rows that validation must quarantine as ``duplicate`` (about 100,000 genuine lines);
  merging only those identical rows is not enough, since a merged row can then equal another one.
* ``customers``: one row per ``CustomerID`` over all lines; ``signup_ts`` = the customer's first
  invoice time, ``region`` = the customer's most frequent ``Country`` (ties: alphabetical).
* ``events``: the dataset has none; an empty, valid file is written.

CDNOW (``cdnow_master.txt``)
----------------------------
* Whitespace-separated with the header ``customer_id date number_of_cds dollar_value``.
  ``customer_id`` = the id as an integer, as a string (``00001`` -> ``1``); ``order_id`` =
  ``f"{customer_id}-{date}"`` (several records on one day are one purchase occasion); ``ts`` =
  midnight UTC of ``date``; ``quantity`` = ``number_of_cds``; ``amount`` = ``dollar_value``;
  ``category`` null; ``is_return`` false. ``customers``: ``signup_ts`` = first purchase.
* Records that are exact copies of an earlier record are counted in ``duplicates_seen``; they map
  to identical transaction lines, which validation quarantines as ``duplicate`` (the contract's
  rule). Note that the BTYD convention instead sums all records of a customer-day.

:class:`LoadReport` counts special cases over the **lines read** (a line can count in several).
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
from pydantic import BaseModel, Field

from features.importer import ROW, Mapping, SourceRelation, parse_mapping, stage_relations
from features.validate import ContractError, _first_line, _lit, _nullable, _tmp_beside, _unlink
from portrait.files import publish

NON_PRODUCT_REASON = "non_product_line"
DUPLICATE_LINE_REASON = "duplicate_line"

NON_PRODUCT_STOCK_CODES: tuple[str, ...] = (
    "POST",  # postage
    "DOT",  # dotcom postage
    "C2",  # carriage
    "M",  # manual adjustment (also lower-case 'm')
    "D",  # discount
    "S",  # samples
    "B",  # adjust bad debt
    "BANK CHARGES",
    "AMAZONFEE",
    "CRUK",  # Cancer Research UK commission
    "PADS",  # 'PADS TO MATCH ALL CUSHIONS' at 0.001: a price-adjustment line
)
"""Stock codes (compared upper-cased) that are not products; codes ``gift_0001_*`` (gift vouchers,
which are store credit rather than merchandise) are non-product too."""
_GIFT_VOUCHER_PREFIX = "GIFT_0001_"

ONLINE_RETAIL_CATEGORIES: tuple[tuple[str, str], ...] = (
    ("seasonal", r"CHRISTMAS|XMAS|ADVENT|SANTA|REINDEER|SNOWFLAKE|SNOWMAN|NATIVITY|BAUBLE|EASTER|HALLOWEEN"),
    ("party", r"PARTY|BIRTHDAY|BALLOON|CONFETTI|BUNTING|PINATA"),
    ("bags", r"\bBAGS?\b|SHOPPER|PURSE|WALLET|TOTE|RUCKSACK|BACKPACK|WASHBAG"),
    ("lighting", r"LIGHTS?\b|LANTERN|CANDLE|TEA ?LIGHT|T-LIGHT|\bLAMP|\bLED\b|NIGHTLIGHT|CHANDELIER"),
    (
        "jewellery_accessories",
        r"NECKLACE|BRACELET|EARRING|\bRING\b|BROOCH|HAIR|\bCLIP|CHARM|PENDANT|DIAMANTE|UMBRELLA|GLOVES?\b"
        r"|SCARF|KEY ?RING|KEY FOB|SUNGLASSES|JEWEL|BEAD|HAND WARMER|PONCHO|RAIN HAT|PASSPORT COVER|BADGE",
    ),
    ("textiles", r"CUSHION|HOT WATER BOTTLE|BLANKET|THROW|TOWEL|QUILT|APRON|COSY|FABRIC|FELT\b|SEWING"),
    (
        "kitchen_dining",
        r"MUG|\bCUPS?\b|SAUCER|TEACUP|TEAPOT|PLATE|BOWL|CUTLERY|\bJUG\b|\bJARS?\b|BAKING|CAKE|COOKIE|NAPKIN"
        r"|TRAY|LUNCH|KITCHEN|BOTTLE|GLASS|\bDISH|BEAKER|PANTRY|EGG|SPOON|FORK|KNIFE|MOULD|OVEN|FRYING"
        r"|SCALES|BREAD|BISCUIT|POPCORN|DOIL|STRAWS?\b|TUMBLER|COASTER|PICNIC|JELLY|JAM\b|SUGAR|MILK"
        r"|COFFEE|\bTEA\b|CHOPSTICK|CUTTER|PAN\b|RECIPE|FOOD|SNACK|DINNER|BREAKFAST|MEASURING|PLACEMAT"
        r"|PLACE SETTING|COLANDER|TOASTRACK|SALT AND PEPPER",
    ),
    (
        "stationery_cards",
        r"CARDS?\b|PAPER|NOTEBOOK|\bPENS?\b|PENCIL|WRAP|STICKER|TAPE|ENVELOPE|SKETCHBOOK|CALENDAR|DIARY"
        r"|RULER|ERASER|RUBBER|STATIONERY|CHALK|\bTAGS?\b|RIBBON|\bBOOK|NOTE ?PAD|\bPAD\b|LETTER|STAMP"
        r"|CRAYON|COLOURING|MAGNET|WRITING SET|MEMOBOARD|CALCULATOR",
    ),
    (
        "toys_games",
        r"\bTOYS?\b|GAME|JIGSAW|PUZZLE|\bDOLL|SPACEBOY|\bBALL\b|PLAYHOUSE|DOMINO|TEDDY|HARMONICA|SKIPPING"
        r"|MARBLES|SOLDIER|KIT\b|CHILDS|CHILDRENS|\bKIDS?\b|BABY|\bBLOCK|SPINNING|\bKITE|LUDO|BINGO|LADDERS"
        r"|NAUGHTS|STENCIL|CRAFT|PAINT SET|MODELLING|DRAWING SLATE|GLIDER|TATTOO|CREEPY|BUBBLES|KNITTING"
        r"|ROCKING HORSE|WINDMILL|SANDCASTLE|BEACH SPADE|PIGGY BANK",
    ),
    (
        "garden_outdoor",
        r"GARDEN|WATERING|PLANT|HERB|FLOWER POT|BIRD ?FEEDER|BIRD ?HOUSE|SEED|PARASOL|\bSHED\b|TROWEL|GNOME"
        r"|BIRD TABLE|OUTDOOR|PLANTER|\bPOTS?\b|HAMMOCK|PEGS\b",
    ),
    (
        "bath_beauty",
        r"BATHROOM|SOAP|TOILET|TISSUE|PLASTERS|SPONGE|MAKE ?UP|COSMETIC|TOOTHBRUSH|\bBATH\b|LIP ?GLOSS|NAIL"
        r"|MIRROR|INCENSE",
    ),
    (
        "storage",
        r"\bBOX|BOXES|\bTINS?\b|STORAGE|BASKET|CONTAINER|HOLDER|\bCASES?\b|CHEST|DRAWER|CABINET|\bCRATE"
        r"|TIDY|\bRACK|BUCKET",
    ),
    (
        "home_decor",
        r"DECORATION|HANGING|SIGN\b|FRAME|GARLAND|ORNAMENT|WREATH|CLOCK|DOORMAT|DOORSTOP|\bHOOK|KNOB|VASE"
        r"|PHOTO|PICTURE|WALL|CHALKBOARD|BLACKBOARD|HEART|STAR\b|BELL|BIRD|DECORATIVE|FLOWER|PLAQUE"
        r"|BUTTERFLY|ART\b|PRINT|\bMAT\b|HOME|DOOR HANGER|PENNANT|BLACK BOARD",
    ),
)
"""Ordered (category, regular expression on the upper-cased Description) rules; the first match
wins, no match gives ``other``. 13 categories + ``other``; about 5% of product lines are ``other``."""

ONLINE_RETAIL_COLUMNS: tuple[str, ...] = (
    "InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country",
)  # fmt: skip
CDNOW_COLUMNS: tuple[str, ...] = ("customer_id", "date", "number_of_cds", "dollar_value")


class LoadReport(BaseModel):
    """What a loader read, wrote and set aside. Special-case counts are over the lines read."""

    dataset: str
    source: str
    rows_read: int
    rows_written: dict[str, int] = Field(description="Rows written per contract table.")
    missing_customer_id: int = Field(0, description="Lines read without a customer id.")
    cancellations: int = Field(0, description="Lines read that are cancellations (mapped to returns).")
    non_product_lines: int = Field(0, description="Lines kept out of transactions (non-product codes).")
    zero_price: int = Field(0, description="Lines read with a unit price (CDNOW: dollar value) of 0.")
    negative_price: int = Field(0, description="Lines read with a negative unit price.")
    duplicates_seen: int = Field(0, description="Lines read that exactly repeat an earlier line.")
    lines_merged: int = Field(
        0, description="Product lines folded into another line of the same order and category."
    )
    quarantined: dict[str, int] = Field(
        default_factory=dict, description="Lines the loader set aside, per reason (its quarantine file)."
    )
    paths: dict[str, str] = Field(default_factory=dict, description="Files written, by role.")


def _category_sql(column: str) -> str:
    text = f"upper({column})"
    whens = " ".join(
        f"WHEN regexp_matches({text}, {_lit(p)}) THEN {_lit(c)}" for c, p in ONLINE_RETAIL_CATEGORIES
    )
    return f"CASE WHEN {column} IS NULL THEN NULL {whens} ELSE 'other' END"


def _non_product_sql(column: str) -> str:
    codes = ", ".join(_lit(c) for c in NON_PRODUCT_STOCK_CODES)
    code = f"upper(trim({column}))"
    return f"({code} IN ({codes}) OR starts_with({code}, {_lit(_GIFT_VOUCHER_PREFIX)}))"


def _copy(
    con: duckdb.DuckDBPyConnection,
    query: str,
    names: list[str],
    target: Path,
    moves: list[tuple[Path, Path]],
) -> int:
    """COPY ``query`` (output columns ``names``) to a temporary file beside ``target``; all
    columns nullable, row order kept."""
    tmp = _tmp_beside(target)
    moves.append((tmp, target))
    rows = con.execute(f"COPY ({_nullable(query, names)}) TO {_lit(str(tmp))} (FORMAT parquet)").fetchall()
    return int(rows[0][0])


def _dataset_file(name: str, path: Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise ContractError(f"{name} file {path} does not exist.")
    if not path.is_file():
        raise ContractError(f"{name} file {path} is not a file.")
    return path


def online_retail_mapping(path: Path, *, merge_lines: bool = True) -> Mapping:
    """The Online Retail mapping (what a mapping file would say), over the pre-step's relations:
    transactions from the kept product lines, customers from the pre-computed profile table."""
    return parse_mapping(
        {
            "customers": {
                "source": str(path),
                "columns": {"customer_id": "customer_id", "signup_ts": "first_ts", "region": "Country"},
            },
            "transactions": {
                "source": str(path),
                "columns": {
                    "order_id": "InvoiceNo",
                    "customer_id": "CustomerID",
                    "ts": "InvoiceDate",
                    "quantity": "Quantity",
                },
                "expressions": {
                    "amount": "CAST(Quantity AS DOUBLE) * CAST(UnitPrice AS DOUBLE)",
                    "category": _category_sql("Description"),
                    "is_return": "starts_with(upper(InvoiceNo), 'C')",
                },
                "timezone": "UTC",
                "amount_decimals": 3,
                "merge_lines": merge_lines,
            },
        },
        name="online retail mapping",
    )


def cdnow_mapping(path: Path) -> Mapping:
    """The CDNOW mapping (what a mapping file would say), over the pre-step's parsed records."""
    return parse_mapping(
        {
            "customers": {"from_activity": True},
            "transactions": {
                "source": str(path),
                "columns": {"ts": "date", "quantity": "number_of_cds", "amount": "dollar_value"},
                "timestamp_format": "%Y%m%d",
                "timezone": "UTC",
                "constants": {"category": None, "is_return": False},
                "derive": {"order_id": "{customer_id}-{ts:%Y%m%d}"},
            },
        },
        name="CDNOW mapping",
    )


def load_online_retail(path: Path, raw_dir: Path, *, merge_lines: bool = True) -> LoadReport:
    """Map UCI Online Retail (``online_retail.parquet``) onto the contract files in ``raw_dir``.

    ``merge_lines=False`` writes one transaction row per product line instead of one per invoice
    and category, and leaves exact duplicate lines to validation (reason ``duplicate``); validation
    then also quarantines the distinct lines that became identical rows (see the module docstring).
    """
    path, raw_dir = _dataset_file("Online Retail", path), Path(raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    quarantine_path = raw_dir.parent / "quarantine" / "online_retail_loader.parquet"
    quarantine_path.parent.mkdir(parents=True, exist_ok=True)

    con = duckdb.connect(":memory:")
    moves: list[tuple[Path, Path]] = []
    try:
        con.execute("SET TimeZone = 'UTC'").fetchall()
        con.execute("SET enable_progress_bar = false").fetchall()
        try:
            cols = {
                r[0]
                for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet({_lit(str(path))})").fetchall()
            }
        except duckdb.Error as exc:
            raise ContractError(
                f"Online Retail file {path} cannot be read as Parquet ({_first_line(exc)})."
            ) from exc
        missing = [c for c in ONLINE_RETAIL_COLUMNS if c not in cols]
        if missing:
            raise ContractError(f"Online Retail file {path} is missing column(s) {', '.join(missing)}.")
        all_cols = ", ".join(f'"{c}"' for c in ONLINE_RETAIL_COLUMNS)
        duplicate_rule = (
            f"WHEN row_number() OVER (PARTITION BY {all_cols} ORDER BY source_row) > 1 "
            f"THEN {_lit(DUPLICATE_LINE_REASON)}"
            if merge_lines
            else ""
        )
        # Pre-step 1: the lines set aside (non-product, exact duplicate lines).
        con.execute(
            f"CREATE TEMP TABLE r AS SELECT *, CASE WHEN non_product THEN {_lit(NON_PRODUCT_REASON)} "
            f"{duplicate_rule} END AS reason FROM ("
            f"SELECT * EXCLUDE (file_row_number), file_row_number AS source_row, "
            f"{_non_product_sql('StockCode')} AS non_product "
            f"FROM read_parquet({_lit(str(path))}, file_row_number=true))"
        ).fetchall()
        (rows_read, no_customer, cancellations, non_product, zero_price, negative_price, duplicates) = (
            con.execute(
                "SELECT count(*), count(*) FILTER (WHERE CustomerID IS NULL), "
                "count(*) FILTER (WHERE starts_with(upper(InvoiceNo), 'C')), "
                "count(*) FILTER (WHERE non_product), count(*) FILTER (WHERE UnitPrice = 0), "
                "count(*) FILTER (WHERE UnitPrice < 0), "
                f"count(*) - count(DISTINCT ({all_cols})) FROM r"
            ).fetchall()[0]
        )
        # The product lines kept, in file order: the mapping's transactions source.
        con.execute(
            f"CREATE TEMP VIEW or_lines AS SELECT {all_cols}, source_row AS {ROW} FROM r WHERE reason IS NULL"
        ).fetchall()
        # Pre-step 2: customers over all lines read (first invoice, most frequent country).
        con.execute(
            f"""
            CREATE TEMP TABLE or_customers AS
            WITH lines AS (SELECT CAST(CAST(CustomerID AS BIGINT) AS VARCHAR) AS customer_id, InvoiceDate,
                                  Country FROM r WHERE CustomerID IS NOT NULL),
                 first AS (SELECT customer_id, min(InvoiceDate) AS first_ts FROM lines GROUP BY customer_id),
                 country AS (SELECT customer_id, Country, count(*) AS n FROM lines
                             WHERE Country IS NOT NULL GROUP BY ALL),
                 top AS (SELECT customer_id, Country FROM country
                         QUALIFY row_number() OVER (PARTITION BY customer_id ORDER BY n DESC, Country) = 1)
            SELECT f.customer_id, f.first_ts, CAST(t.Country AS VARCHAR) AS Country,
                   row_number() OVER (ORDER BY f.first_ts, f.customer_id) - 1 AS {ROW}
            FROM first f LEFT JOIN top t USING (customer_id)
            """
        ).fetchall()
        staged = stage_relations(
            con,
            online_retail_mapping(path, merge_lines=merge_lines),
            {
                "transactions": SourceRelation("or_lines", f"Online Retail file {path}"),
                "customers": SourceRelation("or_customers", f"Online Retail file {path} (customers)"),
            },
            raw_dir,
        )
        moves += staged.moves
        tables = staged.report.tables
        written = {t: tables[t].rows_written for t in ("customers", "transactions", "events")}
        _copy(
            con,
            f"SELECT {all_cols}, reason, source_row FROM r WHERE reason IS NOT NULL ORDER BY source_row",
            [*ONLINE_RETAIL_COLUMNS, "reason", "source_row"],
            quarantine_path,
            moves,
        )
        quarantined = dict(
            con.execute(
                "SELECT reason, count(*) FROM r WHERE reason IS NOT NULL GROUP BY reason ORDER BY reason DESC"
            ).fetchall()
        )
        lines_merged = tables["transactions"].merged
        if written["transactions"] + lines_merged + sum(quarantined.values()) != rows_read:
            raise RuntimeError(
                f"Online Retail mapping does not add up: read {rows_read}, transactions "
                f"{written['transactions']}, merged {lines_merged}, set aside {quarantined}"
            )
        publish(moves)
    finally:
        con.close()
        for tmp, _ in moves:
            _unlink(tmp)

    return LoadReport(
        dataset="online_retail",
        source=str(path),
        rows_read=int(rows_read),
        rows_written=written,
        missing_customer_id=int(no_customer),
        cancellations=int(cancellations),
        non_product_lines=int(non_product),
        zero_price=int(zero_price),
        negative_price=int(negative_price),
        duplicates_seen=int(duplicates),
        lines_merged=int(lines_merged),
        quarantined={k: int(v) for k, v in quarantined.items()},
        paths={
            **{t: tables[t].path or "" for t in ("customers", "transactions", "events")},
            "quarantine": str(quarantine_path),
        },
    )


def load_cdnow(path: Path, raw_dir: Path) -> LoadReport:
    """Map CDNOW (``cdnow_master.txt``) onto the contract files in ``raw_dir``."""
    path, raw_dir = _dataset_file("CDNOW", path), Path(raw_dir)
    # Pre-step: the whitespace-separated layout, its header and every value are checked here, so a
    # wrong file fails with the line at fault before anything is mapped.
    try:
        df = pd.read_csv(path, sep=r"\s+", dtype=str, engine="c")
    except (OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ContractError(f"CDNOW file {path} cannot be read ({_first_line(exc)}).") from exc
    if list(df.columns) != list(CDNOW_COLUMNS):
        raise ContractError(
            f"CDNOW file {path} has header {' '.join(map(str, df.columns))!r}, expected {' '.join(CDNOW_COLUMNS)!r}."
        )
    rows_read = len(df)

    def parsed(column: str, values: pd.Series) -> pd.Series:
        bad = values.isna()
        if bad.any():
            line = int(bad.idxmax()) + 2  # 1-based, after the header line
            raise ContractError(
                f"CDNOW file {path} line {line} has an invalid {column} {df[column][bad].iloc[0]!r}."
            )
        return values

    cid = parsed("customer_id", pd.to_numeric(df["customer_id"], errors="coerce"))
    parsed("date", pd.to_datetime(df["date"], format="%Y%m%d", errors="coerce"))
    cds = parsed("number_of_cds", pd.to_numeric(df["number_of_cds"], errors="coerce"))
    dollars = parsed("dollar_value", pd.to_numeric(df["dollar_value"], errors="coerce"))
    if (cid % 1 != 0).any() or (cds % 1 != 0).any():
        raise ContractError(f"CDNOW file {path} has a non-integer customer_id or number_of_cds.")
    records = pd.DataFrame(
        {
            "customer_id": cid.astype("int64"),  # 00001 -> 1 (mapped to the string "1")
            "date": df["date"],
            "number_of_cds": cds.astype("int64"),
            "dollar_value": dollars.astype("float64"),
            ROW: range(rows_read),
        }
    )

    raw_dir.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(":memory:")
    try:
        con.register("cdnow_frame", records)
        con.execute("CREATE TEMP TABLE cdnow_records AS SELECT * FROM cdnow_frame").fetchall()
        con.unregister("cdnow_frame")
        staged = stage_relations(
            con,
            cdnow_mapping(path),
            {"transactions": SourceRelation("cdnow_records", f"CDNOW file {path}")},
            raw_dir,
        )
        try:
            staged.commit()
        finally:
            staged.discard()
    finally:
        con.close()
    tables = staged.report.tables
    return LoadReport(
        dataset="cdnow",
        source=str(path),
        rows_read=rows_read,
        rows_written={t: tables[t].rows_written for t in ("customers", "transactions", "events")},
        missing_customer_id=0,
        cancellations=0,
        non_product_lines=0,
        zero_price=int((dollars == 0).sum()),
        negative_price=int((dollars < 0).sum()),
        duplicates_seen=int(df.duplicated().sum()),
        paths={t: tables[t].path or "" for t in ("customers", "transactions", "events")},
    )


__all__ = [
    "CDNOW_COLUMNS",
    "DUPLICATE_LINE_REASON",
    "NON_PRODUCT_REASON",
    "NON_PRODUCT_STOCK_CODES",
    "ONLINE_RETAIL_CATEGORIES",
    "ONLINE_RETAIL_COLUMNS",
    "LoadReport",
    "cdnow_mapping",
    "load_cdnow",
    "load_online_retail",
    "online_retail_mapping",
]
