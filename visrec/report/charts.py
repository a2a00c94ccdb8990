"""Charts for the report, drawn with matplotlib at build time as inline SVG: the page works offline and
fetches no script. Every data mark (a line, a bar) has an id starting with ``mark-``, so the page can
check that each chart drew something."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence


def _svg(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog and doctype: it sits inside HTML


def _axes(title: str, ylabel: str = ""):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "visrec", "font.size": 9})
    fig, ax = plt.subplots(figsize=(6.4, 2.6))
    ax.set_title(title, loc="left", fontsize=10)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    return fig, ax


def line_chart(
    title: str,
    dates: Sequence[str],
    series: dict[str, Sequence[float | None]],
    *,
    marks: Sequence[str] = (),
    ylabel: str = "",
) -> str:
    """One line per series over ``dates`` (None: no value that night); a dashed rule at each date in
    ``marks`` (e.g. a new champion)."""
    fig, ax = _axes(title, ylabel)
    x = list(range(len(dates)))
    for name, values in series.items():
        points = [(i, v) for i, v in zip(x, values, strict=True) if v is not None and math.isfinite(v)]
        if points:
            (line,) = ax.plot(
                [p[0] for p in points], [p[1] for p in points], marker="o", markersize=3, label=name
            )
            line.set_gid(f"mark-{name}")  # data marks carry ids starting with "mark-": the page's self-check
    for date in marks:
        if date in dates:
            ax.axvline(dates.index(date), color="grey", linestyle="--", linewidth=0.8)
    ax.set_xticks(x, [d[5:] for d in dates], rotation=45 if len(dates) > 8 else 0)
    if len(series) > 1:
        ax.legend(fontsize=8, frameon=False, loc="best")
    return _svg(fig)


def bar_chart(
    title: str, labels: Sequence[str], stacks: dict[str, Sequence[float]], *, ylabel: str = ""
) -> str:
    """Stacked bars: one bar per label, one colour per stack."""
    fig, ax = _axes(title, ylabel)
    bottom = [0.0] * len(labels)
    for name, values in stacks.items():
        bars = ax.bar(range(len(labels)), values, bottom=bottom, label=name)
        for n, bar in enumerate(bars):
            bar.set_gid(f"mark-{name}-{n}")
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_xticks(range(len(labels)), labels, rotation=45 if len(labels) > 8 else 0)
    if len(stacks) > 1:  # beside the bars, not over them
        ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _svg(fig)
