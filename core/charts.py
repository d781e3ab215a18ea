"""Server-rendered SVG bar charts (no JavaScript, nothing for the CSP to allow).

`stacked_bars` lays out the rectangles; `templates/includes/chart.html` draws them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    series: int
    title: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    bars: list[Bar]
    labels: list[tuple[float, str]]
    series_names: list[str]
    max_value: int

    @property
    def empty(self) -> bool:
        return self.max_value == 0


def stacked_bars(
    labels: list[str],
    series: list[tuple[str, list[int]]],
    *,
    width: int = 720,
    height: int = 200,
    label_every: int = 5,
) -> Chart:
    """Stack each series' values per label; bars scale to the tallest stack."""
    plot_height = height - 20
    count = max(len(labels), 1)
    slot = width / count
    totals = [sum(values[i] for _, values in series) for i in range(len(labels))]
    top = max(totals, default=0)
    bars: list[Bar] = []
    for i, label in enumerate(labels):
        y = float(plot_height)
        for index, (name, values) in enumerate(series):
            value = values[i]
            if not value or not top:
                continue
            h = plot_height * value / top
            y -= h
            bars.append(
                Bar(
                    round(i * slot + slot * 0.15, 2),
                    round(y, 2),
                    round(slot * 0.7, 2),
                    round(h, 2),
                    index,
                    f"{label} · {name}: {value:,}",
                )
            )
    ticks = [
        (round(i * slot + slot / 2, 2), label)
        for i, label in enumerate(labels)
        if i % label_every == 0
    ]
    return Chart(width, height, bars, ticks, [name for name, _ in series], top)
