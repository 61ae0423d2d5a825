"""Server-rendered SVG charts of the last days of runs for the dashboard:
per day, the runs' total duration and the records created, updated, deleted
and rejected (stacked). Plain data in, plain data out (the template draws the
rectangles, escaped); nothing from the internet, no script, no inline style.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

SERIES = ("created", "updated", "deleted", "rejected")
WIDTH, HEIGHT, PAD_LEFT, PAD_BOTTOM = 1100, 190, 56, 22


@dataclass
class Bar:
    x: float
    width: float
    parts: list[tuple[str, float, float, int]]  # (series, y, height, value)
    label: str
    title: str


@dataclass
class Chart:
    title: str
    bars: list[Bar] = field(default_factory=list)
    ticks: list[tuple[float, str]] = field(default_factory=list)  # (y, text)
    days: list[tuple[float, str]] = field(default_factory=list)  # (x, text) axis labels
    legend: tuple[str, ...] = ()
    width: int = WIDTH
    height: int = HEIGHT
    pad_left: int = PAD_LEFT
    empty: bool = True


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    mag = 10 ** (len(str(int(v))) - 1)
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * mag:
            return float(m * mag)
    return float(10 * mag)


def _day_of(text: str | None) -> date | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC).date()
    except ValueError:
        return None


def _compact(n: float) -> str:
    if n >= 1_000_000:
        return f"{n / 1_000_000:.1f}M"
    if n >= 10_000:
        return f"{n / 1000:.0f}k"
    return f"{n:,.0f}"


def daily(runs: Iterable[Mapping[str, Any]], days: int = 30,
          today: date | None = None) -> list[dict[str, Any]]:
    """Per day (oldest first, `days` of them up to today): runs, total
    duration in seconds and the summed counts."""
    today = today or datetime.now(UTC).date()
    first = today - timedelta(days=days - 1)
    out: dict[date, dict[str, Any]] = {
        first + timedelta(days=i): {"day": first + timedelta(days=i), "runs": 0,
                                    "seconds": 0.0, **dict.fromkeys(SERIES, 0)}
        for i in range(days)}
    for r in runs:
        d = _day_of(r.get("started_at"))
        if d is None or d not in out:
            continue
        row = out[d]
        row["runs"] += 1
        row["seconds"] += (r.get("duration_ms") or 0) / 1000
        for s in SERIES:
            row[s] += int(r.get(s) or 0)
    return list(out.values())


def _frame(chart: Chart, top: float, fmt: str) -> float:
    plot_h = chart.height - PAD_BOTTOM - 8
    for i in range(5):
        v = top * i / 4
        chart.ticks.append((8 + plot_h - plot_h * i / 4,
                            (f"{v:.0f} s" if top >= 10 else f"{v:.2f} s") if fmt == "s"
                            else _compact(v)))
    return plot_h


def duration_chart(days: list[dict[str, Any]]) -> Chart:
    chart = Chart(title="Run time per day (seconds, all runs)", legend=("duration",))
    top = _nice_max(max((d["seconds"] for d in days), default=0))
    plot_h = _frame(chart, top, "s")
    slot = (chart.width - PAD_LEFT - 4) / max(len(days), 1)
    for i, d in enumerate(days):
        x = PAD_LEFT + i * slot + 1
        h = plot_h * d["seconds"] / top
        chart.empty = chart.empty and d["runs"] == 0
        chart.bars.append(Bar(x, max(slot - 2, 1), [("duration", 8 + plot_h - h, h,
                                                     round(d["seconds"]))],
                              d["day"].strftime("%d %b"),
                              f"{d['day']:%d %b}: {d['runs']} run(s), {d['seconds']:.1f} s"))
        if i % 5 == 0 or i == len(days) - 1:
            chart.days.append((x + slot / 2, d["day"].strftime("%d %b")))
    return chart


def records_chart(days: list[dict[str, Any]]) -> Chart:
    chart = Chart(title="Records per day: created, updated, deleted, rejected", legend=SERIES)
    top = _nice_max(max((sum(d[s] for s in SERIES) for d in days), default=0))
    plot_h = _frame(chart, top, "n")
    slot = (chart.width - PAD_LEFT - 4) / max(len(days), 1)
    for i, d in enumerate(days):
        x = PAD_LEFT + i * slot + 1
        y = 8 + plot_h
        parts = []
        for s in SERIES:
            h = plot_h * d[s] / top
            y -= h
            if d[s]:
                parts.append((s, y, h, d[s]))
        chart.empty = chart.empty and d["runs"] == 0
        counts = ", ".join(f"{d[s]:,} {s}" for s in SERIES)
        chart.bars.append(Bar(x, max(slot - 2, 1), parts, d["day"].strftime("%d %b"),
                              f"{d['day']:%d %b}: {d['runs']} run(s); {counts}"))
        if i % 5 == 0 or i == len(days) - 1:
            chart.days.append((x + slot / 2, d["day"].strftime("%d %b")))
    return chart
