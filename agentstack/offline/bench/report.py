"""Markdown report plus one PNG bar chart per benchmark run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def save_figure(fig: Any, path: Path) -> Path:
    """Lay out, write (creating the directory) and close a figure; every report plot ends here."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def bar_chart(path: Path, title: str, panels: Mapping[str, Mapping[str, float]]) -> Path:
    """One panel per metric, one bar per side; values are annotated on the bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (metric, values) in zip(axes[0], panels.items()):
        names, heights = list(values), list(values.values())
        bars = ax.bar(names, heights, color=["#4C72B0", "#DD8452", "#55A868", "#C44E52"][: len(names)])
        ax.bar_label(bars, fmt="%.3g")
        ax.set_title(metric)
        ax.margins(y=0.15)
    fig.suptitle(title)
    return save_figure(fig, path)


def grouped_bar_chart(
    path: Path, title: str, groups: Mapping[str, Mapping[str, float]], *, ylabel: str = ""
) -> Path:
    """One group of bars per key of `groups` (e.g. a category), one bar per series (e.g. a mode)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = list(dict.fromkeys(name for values in groups.values() for name in values))
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(groups)), 4.0))
    for i, name in enumerate(series):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        bars = ax.bar(xs, [values.get(name, 0.0) for values in groups.values()], width, label=name)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(range(len(groups)), list(groups), rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    ax.margins(y=0.15)
    return save_figure(fig, path)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
