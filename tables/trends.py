"""Online analytics over one key's series of closed windows: moving average, cumulative
totals, a forecast from a weighted linear trend, and anomaly scores.

Pure and sequential: a `Trend` is updated one closed window at a time, in window order, and
every result is a fixed sequence of float operations on the windows seen so far. So the same
windows give the same bits however they were batched, live, replayed or after a restart.

The series is the key's windows *with data* (an empty window is never emitted upstream), in
window-start order. Positions on the time axis are window indexes (`start // size`), so gaps
stretch the trend's x axis but do not count as zeros.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

# Shared by every key of a pipeline; a change of these is a change of results (a new version).


@dataclass(frozen=True, slots=True)
class TrendConfig:
    """`average_windows`: windows in the moving average. `half_life_windows`: after how many
    windows a window weighs half as much in the trend and in the anomaly baseline.
    `anomaly_z`: |z| above which a window is an anomaly, once `warmup_windows` came before."""

    average_windows: int = 5
    half_life_windows: float = 10.0
    anomaly_z: float = 3.0
    warmup_windows: int = 10

    def __post_init__(self) -> None:
        bounds = {
            "average_windows": (1, 1_000),
            "half_life_windows": (0.5, 1e6),
            "anomaly_z": (1e-6, 1e6),
            "warmup_windows": (1, 1_000_000),
        }
        for name, (low, high) in bounds.items():
            value = getattr(self, name)
            if not low <= value <= high:  # also refuses NaN
                raise ValueError(f"{name} must be from {low:g} to {high:g}, got {value}")

    @property
    def decay(self) -> float:
        """How much an older window's weight shrinks per newer window (0 < decay < 1)."""
        return float(0.5 ** (1.0 / self.half_life_windows))


@dataclass(frozen=True, slots=True)
class TrendPoint:
    """What one closed window tells about its key, given every earlier window."""

    window_start: int
    window_end: int  # exclusive
    count: int  # events in this window
    value: float  # this window's value (the revenue pipeline: its sum)
    moving_average: float  # mean value of the last `average_windows` windows, this one included
    windows: int  # windows seen so far, this one included
    cumulative_count: int  # events in all windows so far
    cumulative_value: float
    expected: float | None  # the trend's forecast for this window before it (None: first; ≥ 0)
    forecast_next: float  # the trend's value one window after this one (never negative)
    zscore: float | None  # (value − expected) / weighted RMS of earlier errors; None before one
    anomaly: bool


# Format 2: (2, last_start, last_index, windows, count, value, Σw·e², Σw, s0, s1, s2, sy, sdy,
# last_anomaly, n) then the n recent values. Format 1, read only, had no last_anomaly, its
# errors' running mean square where Σw·e² is, and 0.0 where Σw is.
_HEAD = struct.Struct(">BqqqqddddddddbH")
_HEAD_1 = struct.Struct(">BqqqqddddddddH")
_FORMAT = 2


@dataclass(slots=True)
class Trend:
    """One key's running analytics. `observe` folds in the next closed window.

    The trend is a least-squares line through (window index, value), each window weighted by
    `decay` per newer window (recursive least squares with forgetting). Its sums are held
    relative to the newest window's index, so they stay small however far the epoch is.
    A window's anomaly score is its error against that forecast, in units of the root mean
    square of the earlier errors, each weighted by `decay` per newer error: a steady trend is
    no anomaly, a jump off it is. A spike joins the line and the errors only as far as the
    threshold (its value moved to `anomaly_z` spreads off the forecast), so it neither bends the
    forecasts after it nor hides the next jump behind a spread it inflated (in a series
    forecast exactly, the spread is float noise). A second anomaly on the same side (a shift),
    or one after a gap (judged by an extrapolation), joins whole.
    """

    last_start: int = -(1 << 63)
    last_index: int = 0
    windows: int = 0
    cumulative_count: int = 0
    cumulative_value: float = 0.0
    error_sum: float = 0.0  # Σw·e² over the forecast errors so far (w: decay per newer error)
    # Σw, Σw·d, Σw·d², Σw·y, Σw·d·y over the windows, d = index − last_index (≤ 0).
    s0: float = 0.0
    s1: float = 0.0
    s2: float = 0.0
    sy: float = 0.0
    sdy: float = 0.0
    recent: list[float] = field(default_factory=list)  # newest last, at most average_windows
    error_weight: float = 0.0  # Σw over the same errors; 0 with errors: a format-1 state
    last_anomaly: int = 0  # the newest window's anomaly side: +1 above, -1 below, 0 none

    def observe(
        self, start: int, end: int, count: int, value: float, config: TrendConfig
    ) -> TrendPoint | None:
        """Fold in the next window; None (and nothing changed) if it is not after the last one
        (a window re-sent after a crash upstream)."""
        if start <= self.last_start:
            return None
        size = end - start
        index = start // size if size > 0 else start
        decay = config.decay
        if self.windows >= 2 and self.error_weight == 0.0:  # stored as a running mean square
            self.error_weight = 1.0 / (1.0 - decay)
            self.error_sum *= self.error_weight
        ahead = index - self.last_index
        expected = max(0.0, self._forecast(ahead)) if self.windows else None
        zscore, anomaly, spread = self._score(value, expected, config)
        fitted = value  # what joins the line and the errors
        side = (1 if value > expected else -1) if anomaly and expected is not None else 0
        # A spike joins as far as the threshold. A second anomaly on the same side is a shift,
        # and one after a gap was judged by an extrapolation: the forecast may be what is wrong,
        # so those join whole.
        if side and spread > 0.0 and side != self.last_anomaly and ahead == 1:
            fitted = expected + side * config.anomaly_z * spread  # type: ignore[operator]
        self.last_anomaly = side

        if expected is not None:  # scored first, then the error joins the baseline
            error = fitted - expected
            self.error_sum = decay * self.error_sum + error * error
            self.error_weight = decay * self.error_weight + 1.0
            shift = float(ahead)  # move the origin to this window
            self.s2 = decay * (self.s2 - 2.0 * shift * self.s1 + shift * shift * self.s0)
            self.s1 = decay * (self.s1 - shift * self.s0)
            self.sdy = decay * (self.sdy - shift * self.sy)
            self.s0 = decay * self.s0
            self.sy = decay * self.sy
        self.s0 += 1.0
        self.sy += fitted
        self.last_start, self.last_index = start, index
        self.windows += 1
        self.cumulative_count += count
        self.cumulative_value += value
        recent = self.recent
        recent.append(value)
        if len(recent) > config.average_windows:
            del recent[: len(recent) - config.average_windows]
        average = math.fsum(recent) / len(recent)
        return TrendPoint(
            start,
            end,
            count,
            value,
            average,
            self.windows,
            self.cumulative_count,
            self.cumulative_value,
            expected,
            max(0.0, self._forecast(1)),
            zscore,
            anomaly,
        )

    def summary(self) -> dict[str, float | int]:
        """Where the key stands after its newest window (for queries)."""
        return {
            "windows": self.windows,
            "last_window_start": self.last_start,
            "cum_orders": self.cumulative_count,
            "cum_revenue": self.cumulative_value,
            "moving_avg": math.fsum(self.recent) / len(self.recent) if self.recent else 0.0,
            "forecast_next": max(0.0, self._forecast(1)) if self.windows else 0.0,
        }

    def _forecast(self, ahead: int) -> float:
        """The trend line's value `ahead` windows after the newest one."""
        s0, s1 = self.s0, self.s1
        det = s0 * self.s2 - s1 * s1
        if det <= 1e-12 * s0 * s0:  # one window, or all at one index: a flat line
            return self.sy / s0
        slope = (s0 * self.sdy - s1 * self.sy) / det
        return (self.sy - slope * s1) / s0 + slope * ahead

    def _score(
        self, value: float, expected: float | None, config: TrendConfig
    ) -> tuple[float | None, bool, float]:
        """`value`'s forecast error in units of the earlier errors' weighted RMS; None before an
        earlier error. Errors below a billionth of the forecast count as float noise. Also the
        spread the score used, which bounds a spike: for a series forecast exactly, that noise
        (joined whole, a spike there would bend every later forecast and, as the spread, hide
        the next jump); 0.0 only where the forecast is 0 too, and an anomaly then joins whole."""
        if expected is None or self.windows < 2:
            return None, False, 0.0
        warm = self.windows - 1 >= config.warmup_windows  # errors in the baseline
        measured = math.sqrt(self.error_sum / self.error_weight)
        noise = 1e-9 * expected
        spread = max(measured, noise)
        z = (value - expected) / spread if spread > 0.0 else math.inf
        if not math.isfinite(z):  # every earlier forecast exact (or errors underflowed to 0)
            return None, warm and value != expected, 0.0
        return z, warm and abs(z) > config.anomaly_z, spread

    def to_bytes(self) -> bytes:
        head = _HEAD.pack(
            _FORMAT,
            self.last_start,
            self.last_index,
            self.windows,
            self.cumulative_count,
            self.cumulative_value,
            self.error_sum,
            self.error_weight,
            self.s0,
            self.s1,
            self.s2,
            self.sy,
            self.sdy,
            self.last_anomaly,
            len(self.recent),
        )
        return head + struct.pack(f">{len(self.recent)}d", *self.recent)

    @classmethod
    def from_bytes(cls, raw: bytes) -> Trend:
        """A stored state, of this format or of format 1 (its mean square is converted on the
        next window); an older process refuses format 2 rather than misread it."""
        if raw[:1] == b"\x01":
            fields = _HEAD_1.unpack_from(raw)
            head, error_weight, last_anomaly = _HEAD_1.size, 0.0, 0
        elif raw[:1] == bytes([_FORMAT]):
            fields = _HEAD.unpack_from(raw)
            head, error_weight, last_anomaly = _HEAD.size, fields[7], fields[13]
        else:
            raise ValueError(f"unknown trend state format {raw[:1].hex() or 'none'}")
        n = fields[-1]
        recent = list(struct.unpack_from(f">{n}d", raw, head))
        start, index, windows, count, value, error_sum = fields[1:7]
        s0, s1, s2, sy, sdy = fields[8:13]
        return cls(
            start,
            index,
            windows,
            count,
            value,
            error_sum,
            s0,
            s1,
            s2,
            sy,
            sdy,
            recent,
            error_weight,
            last_anomaly,
        )


def trend_points(
    windows: Sequence[tuple[int, int, int, float]], config: TrendConfig
) -> list[TrendPoint]:
    """Every point of one key's series of (start, end, count, value) windows, in order."""
    trend = Trend()
    points = []
    for start, end, count, value in windows:
        point = trend.observe(start, end, count, value, config)
        if point is not None:
            points.append(point)
    return points
