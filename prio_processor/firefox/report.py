"""A self-contained HTML page per submission date: top origins per metric, totals, errors.

Charts are PNG images drawn with matplotlib and embedded as data URIs, so the page
needs no other file and no network.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass

from . import database

DEFAULT_TOP = 20


@dataclass(frozen=True)
class Part:
    """One published record of a metric: a batch part's client counts."""

    record_id: str
    first_index: int
    origins: int
    error: int
    total: int


@dataclass(frozen=True)
class Metric:
    name: str
    top: list[tuple[str, int]]
    parts: list[Part]
    count_sum: int


def dates(path: str, table: str = database.DEFAULT_TABLE) -> list[str]:
    name = database._quoted(database._table_name(table))
    return [r[0] for r in database.query(path, f"SELECT DISTINCT submission_date FROM {name} ORDER BY 1")]


def metrics(
    path: str, date: str, top: int = DEFAULT_TOP, table: str = database.DEFAULT_TABLE
) -> list[Metric]:
    name = database._quoted(database._table_name(table))
    result = []
    for (metric,) in database.query(
        path, f"SELECT DISTINCT batch_id FROM {name} WHERE submission_date = ? ORDER BY 1", (date,)
    ):
        top_rows = database.query(
            path,
            f"SELECT origin, aggregate FROM {name} WHERE submission_date = ? AND batch_id = ? "
            f'ORDER BY aggregate DESC, "index" LIMIT ?',
            (date, metric, top),
        )
        part_rows = database.query(
            path,
            f'SELECT id, MIN("index") AS first, COUNT(*) AS origins, '
            f"MAX(error) AS error, MAX(total) AS total, "
            f"SUM(aggregate) AS counted FROM {name} WHERE submission_date = ? AND batch_id = ? "
            f"GROUP BY id ORDER BY first",
            (date, metric),
        )
        parts = [Part(r["id"], r["first"], r["origins"], r["error"], r["total"]) for r in part_rows]
        result.append(
            Metric(metric, [(r[0], r[1]) for r in top_rows], parts, sum(r["counted"] for r in part_rows))
        )
    return result


def bar_chart_png(metric: str, top: list[tuple[str, int]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    names = [name for name, _ in top][::-1]
    counts = [count for _, count in top][::-1]
    height = 1.2 + 0.28 * max(1, len(top))
    fig, ax = plt.subplots(figsize=(8, height), dpi=96)
    try:
        ax.barh(range(len(counts)), counts, color="#3b7dd8")
        ax.set_yticks(range(len(names)), labels=names, fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # counts of clients
        ax.set_xlabel("clients")
        ax.set_title(f"{metric}: top {len(top)} origins", fontsize=10)
        ax.margins(y=0.01)
        fig.tight_layout()
        out = io.BytesIO()
        fig.savefig(out, format="png")
    finally:
        plt.close(fig)
    return out.getvalue()


def render(date: str, metric_list: list[Metric], min_batch_size: int | None = None) -> str:
    """The HTML page of one date."""
    e = html.escape
    sections = []
    for m in metric_list:
        png = base64.b64encode(bar_chart_png(m.name, m.top)).decode("ascii")
        part_rows = "".join(
            f"<tr><td>{p.first_index}&ndash;{p.first_index + p.origins - 1}</td><td>{p.total}</td>"
            f"<td>{p.error}</td><td>{p.total - p.error}</td></tr>"
            for p in m.parts
        )
        sections.append(
            f'<section class="metric"><h2>{e(m.name)}</h2>'
            f'<img class="chart" alt="top origins of {e(m.name)}" src="data:image/png;base64,{png}">'
            f"<p>Sum of counts over all origins: <b>{m.count_sum}</b></p>"
            "<table><thead><tr><th>origin indexes</th><th>clients</th><th>errors</th><th>valid</th></tr>"
            "</thead>"
            f"<tbody>{part_rows}</tbody></table></section>"
        )
    policy = (
        f"Minimum batch size in force: {min_batch_size} valid clients per batch."
        if min_batch_size
        else "No minimum batch size in force."
    )
    body = "".join(sections) or "<p>No results for this date.</p>"
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>Origin telemetry {e(date)}</title><style>"
        "body{font-family:sans-serif;margin:2em;max-width:60em}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}"
        "img.chart{display:block;max-width:100%}"
        "</style></head><body>"
        f'<h1>Origin telemetry, {e(date)}</h1><p class="policy">{e(policy)}</p>{body}</body></html>'
    )
