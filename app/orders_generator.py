"""Synthetic orders and input-file reading for the loader: pure, no Kafka imports.

The orders schema (one JSON object per event): ``order_id`` (str), ``user_id`` (str),
``product_id`` (str), ``category`` (str), ``amount`` (number >= 0, a numeric string is coerced),
``quantity`` (int >= 1), ``ts`` (epoch milliseconds int, or an ISO-8601 string with a zone).
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tables.cleaning import MAX_EVENT_MS, MIN_EVENT_MS

ORDER_FIELDS: tuple[str, ...] = (
    "order_id",
    "user_id",
    "product_id",
    "category",
    "amount",
    "quantity",
    "ts",
)
CATEGORIES: tuple[str, ...] = (
    "books",
    "electronics",
    "garden",
    "grocery",
    "home",
    "sports",
    "toys",
    "clothing",
)

# A late record lands at least this far (ms) behind every event produced before it, on top of
# the disorder: far past a 60 s window plus 10 s grace, whatever the partitioning.
LATE_BEHIND_MS = 600_000
# Extra random push for late records (ms), so they do not all fall into the same window.
LATE_SPREAD_MS = 300_000
# Share of good records whose amount is sent as a numeric string (valid: it is coerced).
STRING_AMOUNT_SHARE = 0.1

MALFORMED_KINDS: tuple[str, ...] = (
    "not_json",
    "json_array",
    "missing_field",
    "negative_amount",
    "zero_quantity",
    "non_numeric_amount",
    "bad_ts",
)

JSONL_SUFFIXES = frozenset({".jsonl", ".json", ".ndjson"})
CSV_SUFFIXES = frozenset({".csv"})


@dataclass(frozen=True)
class GeneratorSpec:
    """What to generate; times are epoch milliseconds, fractions are shares of ``count``."""

    count: int
    seed: int = 0
    keys: int = 1000
    users: int = 500
    start_ms: int = 1_700_000_000_000
    span_ms: int = 3_600_000
    disorder_ms: int = 0
    late_fraction: float = 0.0
    bad_fraction: float = 0.0

    def __post_init__(self) -> None:
        """Reject specs that cannot be honoured, with one clear line each."""
        if self.count < 0:
            raise ValueError(f"count must be >= 0, got {self.count}")
        if self.keys < 1 or self.users < 1:
            raise ValueError(f"keys and users must be >= 1, got {self.keys} and {self.users}")
        if self.span_ms < 0 or self.disorder_ms < 0:
            raise ValueError(
                f"span_ms and disorder_ms must be >= 0, got {self.span_ms} and {self.disorder_ms}"
            )
        if not MIN_EVENT_MS <= self.start_ms < MAX_EVENT_MS - self.span_ms:
            # Every order would be rejected as timestamp_out_of_range: say so before producing.
            raise ValueError(
                f"event times from {self.start_ms} over {self.span_ms} ms leave 1970..2100 "
                "(epoch ms); choose another start, span or rate"
            )
        for name in ("late_fraction", "bad_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        if self.late_fraction + self.bad_fraction > 1.0:
            raise ValueError(
                "late_fraction + bad_fraction must be <= 1, got "
                f"{self.late_fraction} + {self.bad_fraction}"
            )

    def kind_counts(self) -> tuple[int, int, int]:
        """Exact (good, late, bad) counts ``generate`` yields, so tests can do exact bookkeeping.

        The first record is always good when any late record is asked for: a late record needs an
        earlier event to be late against.
        """
        bad = round(self.count * self.bad_fraction)
        late = round(self.count * self.late_fraction)
        if late:
            late = max(0, min(late, self.count - bad - 1))
        return self.count - bad - late, late, bad


@dataclass(slots=True)
class GeneratedRecord:
    """One record to produce; ``kind`` is "good", "late" (valid but late) or "bad" (malformed)."""

    key: bytes
    value: bytes
    kind: str


def _good_value(
    order_id: str,
    user_id: str,
    product_id: str,
    category: str,
    amount: str,
    quantity: int,
    ts: int,
) -> bytes:
    """Compact JSON by formatting: ids are plain ASCII, and this is ~5x faster than json.dumps."""
    return (
        f'{{"order_id":"{order_id}","user_id":"{user_id}","product_id":"{product_id}",'
        f'"category":"{category}","amount":{amount},"quantity":{quantity},"ts":{ts}}}'
    ).encode()


def _malformed_value(variant: int, order: dict[str, object]) -> bytes:
    """A record that breaks one schema rule; ``variant`` cycles through MALFORMED_KINDS."""
    kind = MALFORMED_KINDS[variant % len(MALFORMED_KINDS)]
    if kind == "not_json":
        return b'{"order_id":"' + str(order["order_id"]).encode() + b'","amount":'
    if kind == "json_array":
        return json.dumps(list(order.values()), separators=(",", ":")).encode()
    broken = dict(order)
    if kind == "missing_field":
        # Rotate which field is missing so every "required" check gets exercised.
        del broken[ORDER_FIELDS[(variant // len(MALFORMED_KINDS)) % len(ORDER_FIELDS)]]
    elif kind == "negative_amount":
        broken["amount"] = -abs(float(str(order["amount"]))) - 1.0
    elif kind == "zero_quantity":
        broken["quantity"] = 0
    elif kind == "non_numeric_amount":
        broken["amount"] = "twelve"
    else:  # bad_ts
        broken["ts"] = "yesterday-ish"
    return json.dumps(broken, separators=(",", ":")).encode()


def generate(spec: GeneratorSpec) -> Iterator[GeneratedRecord]:
    """Yield ``spec.count`` records in production order, deterministically for ``spec.seed``.

    Event times advance evenly over ``span_ms`` from ``start_ms``, each jittered back by up to
    ``disorder_ms``. Late and bad records are placed at random but their totals are exact
    (``spec.kind_counts()``). A late record's ts is at least ``disorder_ms + LATE_BEHIND_MS``
    behind the largest ts produced before it.
    """
    rng = random.Random(spec.seed)
    rand = rng.random
    count = spec.count
    _, late_left, bad_left = spec.kind_counts()
    step = spec.span_ms / count if count else 0.0
    disorder_span = spec.disorder_ms + 1
    keys, users = spec.keys, spec.users
    product_ids = [f"p{index:05d}" for index in range(keys)]
    categories = [CATEGORIES[index % len(CATEGORIES)] for index in range(keys)]
    user_ids = [f"u{index:05d}" for index in range(users)]
    order_prefix = f"o{spec.seed}-"
    max_ts: int | None = None
    bad_seen = 0

    for index in range(count):
        product = int(rand() * keys)
        product_id = product_ids[product]
        user_id = user_ids[int(rand() * users)]
        amount_cents = 100 + int(rand() * 49_900)
        amount = f"{amount_cents // 100}.{amount_cents % 100:02d}"
        quantity = 1 + int(rand() * 5)
        ts = spec.start_ms + int(index * step)
        if spec.disorder_ms:
            ts -= int(rand() * disorder_span)

        # Sequential selection sampling: exact totals, uniformly random positions. When late
        # records are wanted the first record is good (kind_counts reserves it): late needs a past.
        pick = rand() * (count - index)
        if late_left and max_ts is None:
            kind = "good"
        elif pick < bad_left:
            kind = "bad"
            bad_left -= 1
        elif pick < bad_left + late_left and max_ts is not None:
            kind = "late"
            late_left -= 1
            ts = max_ts - spec.disorder_ms - LATE_BEHIND_MS - int(rand() * LATE_SPREAD_MS)
        else:
            kind = "good"
        order_id = f"{order_prefix}{index}"

        if kind == "bad":
            order: dict[str, object] = {
                "order_id": order_id,
                "user_id": user_id,
                "product_id": product_id,
                "category": categories[product],
                "amount": float(amount),
                "quantity": quantity,
                "ts": ts,
            }
            value = _malformed_value(bad_seen, order)
            bad_seen += 1
        else:
            if rand() < STRING_AMOUNT_SHARE:
                amount = f'"{amount}"'
            value = _good_value(
                order_id, user_id, product_id, categories[product], amount, quantity, ts
            )
            if kind == "good" and (max_ts is None or ts > max_ts):
                max_ts = ts
        yield GeneratedRecord(product_id.encode(), value, kind)


def read_file(
    path: str | Path,
    source: BinaryIO | None = None,
    not_object: Callable[[], None] | None = None,
    at_line: Callable[[int], None] | None = None,
) -> Iterator[tuple[bytes | None, bytes]]:
    """(key, value) pairs from a JSONL or CSV orders file, chosen by suffix; key = product_id.
    `source`: the file already open (binary), read from where it stands and closed at the end:
    a pipe cannot be opened a second time. `not_object` is called for each line that does not
    parse as a JSON object, as it is read (a CSV row always becomes one). `at_line` is called
    with each record's line in the file (from 1, as `sed -n Np` counts; a CSV row's first)
    just before it is yielded, so a message about a record can name where to find it.

    Raises ValueError at call time (not on first iteration) for an unknown suffix, so a CLI can
    report it before connecting to anything. Reading a CSV file, a row that is not UTF-8 is a
    ValueError and a row the csv module refuses a csv.Error, each naming its line.
    """
    file_path = Path(path)
    suffix = file_path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return _read_jsonl(file_path, source, not_object or _ignore, at_line or _ignore)
    if suffix in CSV_SUFFIXES:
        return _read_csv(file_path, source, at_line or _ignore)
    known = ", ".join(sorted(JSONL_SUFFIXES | CSV_SUFFIXES))
    raise ValueError(
        f"cannot read {file_path}: unknown suffix {suffix or '(none)'!r}, expected one of {known}"
    )


def _ignore(*args: object) -> None:
    pass


def _read_jsonl(
    path: Path,
    source: BinaryIO | None,
    not_object: Callable[[], None],
    at_line: Callable[[int], None],
) -> Iterator[tuple[bytes | None, bytes]]:
    """Lines pass through byte for byte (minus the newline): validation is the pipeline's job."""
    with source if source is not None else path.open("rb") as lines:
        for line_number, line in enumerate(lines, 1):
            value = line.rstrip(b"\r\n")
            if not value.strip():
                continue
            parsed = _parsed_line(value)
            if not isinstance(parsed, dict):
                not_object()
            at_line(line_number)
            yield _product_key(parsed), value


def _parsed_line(value: bytes) -> object:
    """The line's JSON value as the orders pipeline reads it (strict UTF-8, so a byte order
    mark or UTF-16 is not JSON there), or None when it is not JSON (the pipeline's DLQ)."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return None
    try:
        return json.loads(text)
    except RecursionError:
        return None
    except ValueError:  # not JSON, or an integer past Python's 4,300-digit limit
        try:
            return json.loads(text, parse_int=lambda digits: None)  # JSON still, as there
        except (ValueError, RecursionError):
            return None


def _product_key(parsed: object) -> bytes | None:
    """The product_id of a line that parsed to an object holding one, else None (any
    partition)."""
    if not isinstance(parsed, dict):
        return None
    product_id = parsed.get("product_id")
    if isinstance(product_id, str | int) and not isinstance(product_id, bool):
        try:
            return str(product_id).encode()
        except (UnicodeEncodeError, ValueError):  # a lone surrogate (`"\ud800"`), an int
            return None  # too long for str(): the pipeline dead-letters the line
    return None


def _read_csv(
    path: Path, source: BinaryIO | None, at_line: Callable[[int], None]
) -> Iterator[tuple[bytes | None, bytes]]:
    """Each row becomes a JSON object; integer ts/quantity become ints, other cells stay strings.

    Empty cells are left out so that the pipeline reports them as missing fields. Bytes that are
    not UTF-8 are kept as surrogate escapes until their row is reached, so the error names its
    line (a strict decoder fails a whole 8 KiB chunk ahead, at a position within that chunk).
    """
    binary = source if source is not None else path.open("rb")
    with io.TextIOWrapper(
        binary, newline="", encoding="utf-8-sig", errors="surrogateescape"
    ) as text:
        rows = _csv_rows(text)
        header = next(rows, None)
        if header is None:
            return
        columns = [name.strip() for name in header[1]]
        missing = [name for name in ORDER_FIELDS if name not in columns]
        if missing:
            raise ValueError(f"CSV header lacks column(s) {', '.join(missing)}")
        for line_number, row in rows:
            if not any(cell.strip() for cell in row):
                continue
            record: dict[str, object] = {}
            for name, cell in zip(columns, row, strict=False):
                cell = cell.strip()
                if not cell:
                    continue
                if name in ("ts", "quantity") and _is_int(cell):
                    record[name] = int(cell)
                else:
                    record[name] = cell
            product_id = record.get("product_id")
            key = product_id.encode() if isinstance(product_id, str) else None
            at_line(line_number)
            yield key, json.dumps(record, separators=(",", ":")).encode()


def _csv_rows(lines: Iterable[str]) -> Iterator[tuple[int, list[str]]]:
    """(the row's first line, its cells) of each row, refusing in one line naming it a row
    that is not UTF-8 (surrogate escapes) or that the csv module cannot read."""
    reader = csv.reader(lines)
    while True:
        first_line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:  # a field over the module's limit, a NUL
            raise csv.Error(f"line {reader.line_num:,}: {e}") from None
        cells = "".join(row)
        if not cells.isascii():
            try:
                cells.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(f"line {first_line:,} is not UTF-8 text") from None
        yield first_line, row


def _is_int(text: str) -> bool:
    """Plain (optionally negative) decimal integer, as epoch ms and quantities are written."""
    digits = text[1:] if text[:1] == "-" else text
    return digits.isascii() and digits.isdigit()
