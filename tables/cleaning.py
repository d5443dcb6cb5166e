"""Type conversion for raw events: each check raises `InvalidRecord` with a precise reason.

The reasons are stable, short strings: they become DLQ headers and a Prometheus label, so
they must not contain the offending value (unbounded cardinality, possibly a secret).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

MIN_EVENT_MS = 0  # 1970-01-01T00:00:00Z; earlier timestamps are rejected as implausible
MAX_EVENT_MS = 4_102_444_800_000  # 2100-01-01T00:00:00Z
MAX_TEXT_CHARS = 1024
# Furthest an event time may be after its Kafka record's own timestamp (ms; 0: no limit): past
# it, one wrong `ts` would move its partition's stream time on for ever (KAPPA_MAX_TS_AHEAD_MS).
# For new versions: one recorded before the setting existed ran without a limit and keeps
# running so (replay/registry.py fills its definition with 0, and its workers take that).
DEFAULT_MAX_TS_AHEAD_MS = 86_400_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


class InvalidRecord(ValueError):
    """A record that cannot be processed; `reason` is a short stable label, `detail` free text."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def require_text(obj: dict[str, Any], field: str) -> str:
    """A non-empty string field; integers are accepted as ids and converted."""
    v = obj.get(field)
    if v is None:
        raise InvalidRecord("missing_field", field)
    if isinstance(v, LongInteger):
        raise InvalidRecord("field_too_long", f"{field} > {MAX_TEXT_CHARS} chars")
    if isinstance(v, int) and not isinstance(v, bool):
        v = str(v)
    if not isinstance(v, str):
        raise InvalidRecord("wrong_type", f"{field} must be a string")
    if not v:
        raise InvalidRecord("empty_field", field)
    if len(v) > MAX_TEXT_CHARS:
        raise InvalidRecord("field_too_long", f"{field} > {MAX_TEXT_CHARS} chars")
    return v


def require_number(obj: dict[str, Any], field: str) -> float:
    """A finite number; numeric strings ("12.50") are coerced. JSON decoded with
    `parse_float=Decimal` gives the same float as plain decoding (both round correctly)."""
    v = obj.get(field)
    if v is None:
        raise InvalidRecord("missing_field", field)
    if isinstance(v, bool):
        raise InvalidRecord("wrong_type", f"{field} must be a number")
    if isinstance(v, int | float | Decimal):
        try:
            x = float(v)
        except OverflowError:  # an integer literal too large for a float
            raise InvalidRecord("not_finite", field) from None
    elif isinstance(v, str):
        if len(v) > 64:
            raise InvalidRecord("not_a_number", field)
        number = _number_text(v)
        if number is None:
            raise InvalidRecord("not_a_number", field)
        x = number
    else:
        raise InvalidRecord("wrong_type", f"{field} must be a number")
    if not math.isfinite(x):
        raise InvalidRecord("not_finite", field)
    return x


def require_positive_int(obj: dict[str, Any], field: str) -> int:
    """An integer >= 1; integral floats (2.0) and numeric strings ("3") are coerced."""
    x = require_number(obj, field)
    if not x.is_integer() or not _exactly_integral(obj[field]):
        raise InvalidRecord("not_an_integer", field)
    if x < 1:
        raise InvalidRecord("out_of_range", f"{field} must be >= 1")
    return int(x)


def _exactly_integral(v: object) -> bool:
    """Whether a Decimal or numeric string is an integer as written: "2.9999999999999999"
    is not, though its nearest float is 3.0."""
    if isinstance(v, str):
        try:  # a plain decimal (require_number accepted it), if within Decimal's range
            v = Decimal(v.strip())
        except InvalidOperation:  # past Decimal's range: only a zero ("0e99999...") is integral
            return _zero_mantissa(v)
    if isinstance(v, RoundedFloat):
        return False
    return not isinstance(v, Decimal) or v == v.to_integral_value()


def json_float(text: str) -> Decimal | float:
    """`parse_float` for JSON: exact Decimals, so `ts` fractions floor exactly; a literal with
    an exponent beyond Decimal's range becomes the float it rounds to (inf or 0.0), marked."""
    try:
        return Decimal(text)
    except InvalidOperation:
        x = float(text)
        return x if _zero_mantissa(text) else RoundedFloat(x)  # zero is exact


def _zero_mantissa(text: str) -> bool:
    """Whether a decimal number's text is zero whatever its exponent ("0.0e99999")."""
    return not text.strip().lower().partition("e")[0].strip("+-0.")


class RoundedFloat(float):
    """A JSON number literal past Decimal's range, as the float it rounds to: not that value
    as written ("1e-99999999999999999999" is 0.0 here, but not an integer)."""


class LongInteger(Decimal):
    """An integer literal longer than Python converts to int (4,300 digits): still valid
    JSON, so it fails the field's own rule (too long for an id, too large for a float)."""


def json_long_int(text: str) -> int | Decimal:
    """`parse_int` for JSON text that plain decoding refused: ints past the conversion limit
    become `LongInteger`s instead of failing the whole record as not JSON."""
    try:
        return int(text)
    except ValueError:
        return LongInteger(text)


def require_event_time_ms(obj: dict[str, Any], field: str) -> int:
    """Event time as epoch ms: a number (or numeric string) of ms, or ISO-8601 with a zone.

    Fractions of a millisecond are floored, exactly: numeric strings and `Decimal`s (JSON
    decoded with `parse_float=Decimal`) are floored in decimal, ISO times in integer time, so
    `59.9999` never lands in the next millisecond, and so never in the next window.
    """
    v = obj.get(field)
    if v is None:
        raise InvalidRecord("missing_field", field)
    if isinstance(v, str) and len(v) > 64:  # before any parsing: its cost grows with length
        raise InvalidRecord("bad_timestamp", f"{field} unparseable")
    if isinstance(v, str) and v and not _is_float(v):
        try:
            dt = datetime.fromisoformat(v.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise InvalidRecord("bad_timestamp", f"{field} unparseable") from None
        if dt.tzinfo is None:
            raise InvalidRecord("bad_timestamp", f"{field} has no time zone")
        ms = (dt - _EPOCH) // _MS
    elif isinstance(v, str | Decimal):
        ms = _floor_decimal(v, field)
    elif type(v) is int:  # exact however large (a float would overflow): checked below
        ms = v
    elif isinstance(v, RoundedFloat):  # its floor is unknown, as for the same text in a string
        raise InvalidRecord("bad_timestamp", field)
    else:
        try:
            x = require_number(obj, field)
        except InvalidRecord as e:
            raise InvalidRecord("bad_timestamp", e.detail or field) from None
        ms = math.floor(x)
    if ms < MIN_EVENT_MS or ms >= MAX_EVENT_MS:
        raise InvalidRecord("timestamp_out_of_range", f"{field} outside 1970..2100")
    return ms


def require_not_ahead(ts: int, record_ms: int | None, max_ahead_ms: int) -> None:
    """Refuse an event time (ms) more than `max_ahead_ms` after its record's Kafka timestamp.

    The record's timestamp is part of the log, so a replay judges every record as the live
    run did. `max_ahead_ms` 0 turns the check off; a record without a timestamp (None, or
    negative: Kafka's "none") is not checked.
    """
    if (
        max_ahead_ms > 0
        and record_ms is not None
        and record_ms >= 0
        and ts - record_ms > max_ahead_ms
    ):
        raise InvalidRecord(
            "timestamp_ahead",
            f"ts {_ms_text(ts)} is more than {max_ahead_ms} ms after the record's timestamp "
            f"{_ms_text(record_ms)}",
        )


def _ms_text(ms: int) -> str:
    """Epoch ms with its UTC time, for a DLQ detail: `1700000000000 (2023-11-14T22:13:20Z)`."""
    if not MIN_EVENT_MS <= ms < MAX_EVENT_MS:
        return str(ms)
    at = (_EPOCH + ms * _MS).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return f"{ms} ({at})"


def _floor_decimal(v: str | Decimal, field: str) -> int:
    """floor(v) of a numeric string or Decimal, without going through a float."""
    if isinstance(v, str) and len(v) > 64:
        raise InvalidRecord("bad_timestamp", field)
    try:
        d = Decimal(v)
    except (InvalidOperation, ValueError):
        # An exponent past Decimal's range: only a zero ("0e99999999999999999999") is known,
        # as for the same JSON literal (`json_float`).
        if isinstance(v, str) and _DECIMAL.fullmatch(v) and _zero_mantissa(v):
            return 0
        raise InvalidRecord("bad_timestamp", field) from None
    if not d.is_finite():
        raise InvalidRecord("bad_timestamp", field)
    # Out of range either way; spares flooring a huge exponent (copy_abs: abs() would trap it).
    if d.copy_abs() >= MAX_EVENT_MS * 10:
        raise InvalidRecord("timestamp_out_of_range", f"{field} outside 1970..2100")
    return math.floor(d)


# A numeric string: ASCII digits with an optional sign, fraction and exponent, spaces around
# allowed (as CSV cells have them). Python's float() also takes "1_000" and non-ASCII digits,
# which are not numbers any other consumer of the record would read. Possessive quantifiers:
# the match never backtracks, so its time is linear in the length whatever the text.
_DECIMAL = re.compile(r"\s*+[+-]?+(?:\d++(?:\.\d*+)?+|\.\d++)(?:[eE][+-]?+\d++)?+\s*+", re.ASCII)


def numeral_value(s: str) -> float | None:
    """The float of a numeric string (a numeral, spaces around allowed) exactly as
    `require_number` reads it; None for anything else it would have to judge (a word, too
    long): a hot path takes numerals and leaves the rest to `require_number` to name."""
    return float(s) if len(s) <= 64 and _DECIMAL.fullmatch(s) else None


def _number_text(s: str) -> float | None:
    """The value of a numeric string; "inf" and "nan" words as such (not finite, which the
    caller names); None for anything else."""
    if _DECIMAL.fullmatch(s):
        return float(s)
    try:
        x = float(s)
    except ValueError:
        return None
    return None if math.isfinite(x) else x


def _is_float(s: str) -> bool:
    return _number_text(s) is not None
