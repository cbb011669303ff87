"""Readings as an inline SVG line chart, drawn on the server (no plotting library, no script).

The chart is a picture for sighted readers; the page always puts the same values in a table
beside it, which is what a screen reader announces. Series differ by dash pattern and marker
shape as well as colour, so they stay apart in greyscale and for colour-blind readers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from html import escape

from markupsafe import Markup

WIDTH, HEIGHT = 640, 260
LEFT, RIGHT, TOP, BOTTOM = 48, 16, 12, 36
TICKS = 5
# (stroke colour, dash pattern, marker) per series, in order; colours pass 3:1 on white.
STYLES = (("#1f5fa8", "", "circle"), ("#a8321f", "6 3", "square"),
          ("#2a7a2a", "2 3", "diamond"), ("#6b3fa0", "10 3 2 3", "triangle"))


@dataclass(frozen=True, slots=True)
class Series:
    """One measurement over time: its label, unit and (time, value) points, oldest first."""

    label: str
    unit: str
    points: tuple[tuple[datetime, float], ...]


def _marker(shape: str, x: float, y: float, colour: str) -> str:
    if shape == "square":
        return (f'<rect x="{x - 3.5:.1f}" y="{y - 3.5:.1f}" width="7" height="7"'
                f' fill="{colour}"/>')
    if shape == "diamond":
        return (f'<polygon points="{x:.1f},{y - 4.5:.1f} {x + 4.5:.1f},{y:.1f}'
                f' {x:.1f},{y + 4.5:.1f} {x - 4.5:.1f},{y:.1f}" fill="{colour}"/>')
    if shape == "triangle":
        return (f'<polygon points="{x:.1f},{y - 4.5:.1f} {x + 4.5:.1f},{y + 4:.1f}'
                f' {x - 4.5:.1f},{y + 4:.1f}" fill="{colour}"/>')
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{colour}"/>'


def _nice(low: float, high: float) -> tuple[float, float]:
    """A value range with some room above and below, never empty."""
    if high == low:
        return low - 1, high + 1
    pad = (high - low) * 0.08
    return low - pad, high + pad


def svg(series: list[Series], *, title_id: str, desc_id: str,
        time_label: Callable[[datetime], str] = str) -> Markup:
    """The chart; ``title_id`` and ``desc_id`` name the page elements that describe it."""
    drawn = [s for s in series if s.points]
    width, height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    parts = [f'<svg class="plot" viewBox="0 0 {WIDTH} {HEIGHT}" role="img"'
             f' aria-labelledby="{escape(title_id)} {escape(desc_id)}"'
             ' xmlns="http://www.w3.org/2000/svg">',
             f'<rect x="{LEFT}" y="{TOP}" width="{width}" height="{height}" fill="#fff"'
             ' stroke="#767676"/>']
    if drawn:
        times = [t for s in drawn for t, _ in s.points]
        values = [v for s in drawn for _, v in s.points]
        first, last = min(times), max(times)
        low, high = _nice(min(values), max(values))
        span = (last - first).total_seconds()

        def x_of(moment: datetime) -> float:
            share = 0.5 if span == 0 else (moment - first).total_seconds() / span
            return LEFT + share * width

        def y_of(value: float) -> float:
            return TOP + (1 - (value - low) / (high - low)) * height

        for tick in range(TICKS + 1):
            value = low + (high - low) * tick / TICKS
            y = y_of(value)
            parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + width}" y2="{y:.1f}"'
                         ' stroke="#d0d0d0"/>')
            parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end"'
                         f' font-size="11" fill="#333">{value:.0f}</text>')
        # One moment gets one label, in the middle, where its points are.
        ends = ((first, "middle"),) if span == 0 else ((first, "start"), (last, "end"))
        for moment, anchor in ends:
            parts.append(f'<text x="{x_of(moment):.1f}" y="{HEIGHT - 12}" font-size="11"'
                         f' text-anchor="{anchor}" fill="#333">{escape(time_label(moment))}'
                         '</text>')
        for index, item in enumerate(drawn):
            colour, dash, shape = STYLES[index % len(STYLES)]
            points = " ".join(f"{x_of(t):.1f},{y_of(v):.1f}" for t, v in item.points)
            dashing = f' stroke-dasharray="{dash}"' if dash else ""
            parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}"'
                         f' stroke-width="2"{dashing}/>')
            parts.extend(_marker(shape, x_of(t), y_of(v), colour) for t, v in item.points)
    parts.append("</svg>")
    # Safe: every text placed in the markup above is escaped; the rest is numbers we format.
    return Markup("".join(parts))  # noqa: S704


def legend(series: list[Series]) -> list[dict[str, str]]:
    """Label, unit, colour and marker of each drawn series, in drawing order."""
    drawn = [s for s in series if s.points]
    return [{"label": s.label, "unit": s.unit, "colour": STYLES[i % len(STYLES)][0],
             "marker": STYLES[i % len(STYLES)][2]} for i, s in enumerate(drawn)]
