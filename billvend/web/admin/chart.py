"""A server-rendered SVG chart of daily volume (bars) and success rate (line).

Plain geometry computed here and drawn by ``templates/admin/_chart.html``:
no JavaScript, no charting library, nothing fetched from the internet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from billvend.platform.money import format_naira

WIDTH, HEIGHT = 760, 260
LEFT, RIGHT, TOP, BOTTOM = 86, 46, 16, 34


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    title: str


def _nice_ceiling(value_kobo: int) -> int:
    """The smallest 1/2/5 x 10^n naira amount (in kobo) at or above ``value_kobo``."""
    if value_kobo <= 0:
        return 100_00
    magnitude = 100  # one naira
    while True:
        for step in (1, 2, 5):
            if step * magnitude >= value_kobo:
                return step * magnitude
        magnitude *= 10


def build(days: list) -> dict:
    """Geometry for ``days`` (``queries.Day`` items, oldest first)."""
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    top_kobo = _nice_ceiling(max((d.volume_kobo for d in days), default=0))
    slot = plot_w / max(len(days), 1)
    bars: list[Bar] = []
    points: list[str] = []
    dots: list[tuple[float, float, str]] = []
    for i, day in enumerate(days):
        height = plot_h * day.volume_kobo / top_kobo
        x = LEFT + i * slot
        rate: Optional[float] = day.success_rate
        label = (f"{day.day:%d %b}: {day.count} payments, {format_naira(day.volume_kobo)}, "
                 f"success {'n/a' if rate is None else f'{rate}%'}")
        bars.append(Bar(round(x + slot * 0.15, 1), round(TOP + plot_h - height, 1),
                        round(slot * 0.7, 1), round(height, 1), label))
        if rate is not None:
            cx, cy = round(x + slot / 2, 1), round(TOP + plot_h * (1 - rate / 100), 1)
            points.append(f"{cx},{cy}")
            dots.append((cx, cy, label))
    volume_ticks = [(round(TOP + plot_h * (1 - f), 1), format_naira(int(top_kobo * f)))
                    for f in (0, 0.5, 1)]
    rate_ticks = [(round(TOP + plot_h * (1 - f), 1), f"{int(f * 100)}%") for f in (0, 0.5, 1)]
    x_labels = [(round(LEFT + i * slot + slot / 2, 1), f"{day.day:%d %b}")
                for i, day in enumerate(days) if i % 5 == 0 or i == len(days) - 1]
    return {
        "width": WIDTH, "height": HEIGHT, "left": LEFT, "right": WIDTH - RIGHT,
        "top": TOP, "bottom": TOP + plot_h, "bars": bars, "line": " ".join(points),
        "dots": dots, "volume_ticks": volume_ticks, "rate_ticks": rate_ticks,
        "x_labels": x_labels,
    }
