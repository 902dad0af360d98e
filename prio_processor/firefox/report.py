"""A self-contained HTML page per submission date, from the results database.

The page opens with an overview (whose results, the dates in the database, the
minimum batch size in force, every metric's totals, clients, errors and the rejects
of staging and index) and then, per metric, a trend chart over every date of the
database, the date's top origins and every origin's count in a table that sorts and
filters in the page. Charts are PNG images drawn with matplotlib and embedded as
data URIs, the script and style are inline: the page needs no other file and no
network.
"""

from __future__ import annotations

import base64
import html
import io
from collections import defaultdict
from dataclasses import dataclass, field

from . import database

DEFAULT_TOP = 20
#: Origins drawn in a metric's trend chart: the date's largest counts.
TREND_ORIGINS = 5

#: Entries of Firefox's origin list that are not sites, and how to read their counts.
SPECIAL_ORIGINS = {
    "PAGELOAD": "not a site: Firefox records it with every page load it reports for the metric, so its "
    "count is how many clients loaded pages, the base to read the other counts against.",
    "__UNKNOWN__": "not a site: the last index, where origins that are not on Firefox's list are counted.",
}


@dataclass(frozen=True)
class Part:
    """One published record of a metric: a batch part's client counts."""

    record_id: str
    first_index: int
    origins: int
    error: int
    total: int

    @property
    def valid(self) -> int:
        return self.total - self.error


@dataclass(frozen=True)
class OriginCount:
    index: int
    origin: str
    count: int
    valid: int  # the valid clients of the part that counts this origin


@dataclass
class Metric:
    name: str
    parts: list[Part]
    origins: list[OriginCount]  # by index

    @property
    def count_sum(self) -> int:
        return sum(o.count for o in self.origins)

    def top(self, n: int) -> list[OriginCount]:
        return sorted(self.origins, key=lambda o: (-o.count, o.index))[:n]


@dataclass
class Trend:
    """A metric over the dates of the database: valid clients and some origins' counts."""

    dates: list[str]
    valid: dict[str, int] = field(default_factory=dict)  # date -> fewest valid clients of a part
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # origin -> date -> count


@dataclass(frozen=True)
class Reject:
    stage: str
    reason: str
    count: int
    example: str


@dataclass
class Page:
    """What the page of one date shows."""

    date: str
    dates: list[str]  # every reportable date of the database, for the trends
    servers: list[str]  # the server ids of the date's rows ("" where not recorded)
    metrics: list[Metric]
    trends: dict[str, Trend]
    rejects: list[Reject]
    min_batch_size: int | None = None


# Reading the database


def _table(table: str) -> str:
    return database._quoted(database._table_name(table))


def all_dates(path: str, table: str = database.DEFAULT_TABLE) -> list[str]:
    """Every submission_date value in the table, as stored (not all of them need be dates)."""
    sql = f"SELECT DISTINCT submission_date FROM {_table(table)} ORDER BY 1"
    return [str(r[0]) for r in database.query(path, sql)]


def dates(path: str, table: str = database.DEFAULT_TABLE) -> list[str]:
    """The dates of the table that are YYYY-MM-DD: the only ones a page is written for."""
    return [d for d in all_dates(path, table) if database.is_date(d)]


def metrics(path: str, date: str, table: str = database.DEFAULT_TABLE) -> list[Metric]:
    name = _table(table)
    result = []
    for (metric,) in database.query(
        path, f"SELECT DISTINCT batch_id FROM {name} WHERE submission_date = ? ORDER BY 1", (date,)
    ):
        part_rows = database.query(
            path,
            f'SELECT id, MIN("index") AS first, COUNT(*) AS origins, MAX(error) AS error, '
            f"MAX(total) AS total FROM {name} WHERE submission_date = ? AND batch_id = ? "
            "GROUP BY id ORDER BY first",
            (date, metric),
        )
        parts = [Part(str(r["id"]), r["first"], r["origins"], r["error"], r["total"]) for r in part_rows]
        valid = {p.record_id: p.valid for p in parts}
        origin_rows = database.query(
            path,
            f'SELECT "index", origin, aggregate, id FROM {name} WHERE submission_date = ? AND batch_id = ? '
            f'ORDER BY "index"',
            (date, metric),
        )
        origins = [OriginCount(r[0], r[1], r[2], valid[str(r[3])]) for r in origin_rows]
        result.append(Metric(metric, parts, origins))
    return result


def trend(path: str, metric: Metric, reportable: list[str], table: str = database.DEFAULT_TABLE) -> Trend:
    """`metric` over the reportable dates: its valid clients and its top origins' counts."""
    name = _table(table)
    wanted = set(reportable)
    out = Trend(reportable)
    for r in database.query(
        path,
        f"SELECT submission_date, MIN(total - error) FROM (SELECT submission_date, id, "
        f"MAX(total) AS total, MAX(error) AS error FROM {name} WHERE batch_id = ? "
        f"GROUP BY submission_date, id) GROUP BY submission_date",
        (metric.name,),
    ):
        if r[0] in wanted:
            out.valid[r[0]] = r[1]
    top = [o.origin for o in metric.top(TREND_ORIGINS)]
    if top:
        marks = ", ".join("?" for _ in top)
        for r in database.query(
            path,
            f"SELECT origin, submission_date, SUM(aggregate) FROM {name} "
            f"WHERE batch_id = ? AND origin IN ({marks}) GROUP BY origin, submission_date",
            (metric.name, *top),
        ):
            if r[1] in wanted:
                out.counts.setdefault(r[0], {})[r[1]] = r[2]
    out.counts = {o: out.counts.get(o, {}) for o in top}  # in the order of the date's counts
    return out


def servers(path: str, date: str, table: str = database.DEFAULT_TABLE) -> list[str]:
    columns = {r[1] for r in database.query(path, f"PRAGMA table_info({_table(table)})")}
    if "server_id" not in columns:
        return [""]
    rows = database.query(
        path, f"SELECT DISTINCT server_id FROM {_table(table)} WHERE submission_date = ? ORDER BY 1", (date,)
    )
    return [r[0] or "" for r in rows]


def rejects(path: str, date: str, table: str = database.DEFAULT_TABLE) -> list[Reject]:
    name = database.rejects_table(table)
    if not database.has_table(path, name):
        return []
    rows = database.query(
        path,
        f"SELECT stage, reason, COUNT(*), MIN(detail) FROM {database._quoted(name)} "
        f"WHERE submission_date = ? GROUP BY stage, reason ORDER BY stage DESC, reason",
        (date,),
    )
    return [Reject(r[0], r[1], r[2], r[3]) for r in rows]


def page(
    path: str, date: str, table: str = database.DEFAULT_TABLE, min_batch_size: int | None = None
) -> Page:
    reportable = dates(path, table)
    metric_list = metrics(path, date, table)
    trends = {m.name: trend(path, m, reportable, table) for m in metric_list}
    listed = rejects(path, date, table)
    return Page(date, reportable, servers(path, date, table), metric_list, trends, listed, min_batch_size)


# Charts


def _literal(text: str) -> str:
    """Text matplotlib shows as it is: a `$` would start math text."""
    return text.replace("$", r"\$")


def _nan(value: int | None) -> float:
    """A gap in a line chart where a date has no value."""
    return float("nan") if value is None else value


def _png(fig: object) -> bytes:
    out = io.BytesIO()
    fig.savefig(out, format="png")  # type: ignore[attr-defined]
    return out.getvalue()


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bar_chart_png(metric: str, top: list[tuple[str, int]], tied: int = 0) -> bytes:
    """Bars of the top origins; `tied` more origins have the last bar's count (the title says so)."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    names = [_literal(name) for name, _ in top][::-1]
    counts = [count for _, count in top][::-1]
    height = 1.2 + 0.28 * max(1, len(top))
    fig, ax = plt.subplots(figsize=(8, height), dpi=96)
    try:
        bars = ax.barh(range(len(counts)), counts, color="#3b7dd8")
        ax.bar_label(bars, fontsize=7, padding=2)
        ax.set_yticks(range(len(names)), labels=names, fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # counts of clients
        ax.set_xlabel("clients")
        ties = f" ({tied} more with {top[-1][1]}: see the table)" if tied and top else ""
        ax.set_title(_literal(f"{metric}: top {len(top)} origins{ties}"), fontsize=10)
        ax.margins(y=0.01, x=0.08)
        fig.tight_layout()
        return _png(fig)
    finally:
        plt.close(fig)


def trend_chart_png(metric: str, trend_: Trend, date: str) -> bytes:
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    x = list(range(len(trend_.dates)))
    fig, ax = plt.subplots(figsize=(8, 3.2), dpi=96)
    try:
        valid = [trend_.valid.get(d) for d in trend_.dates]
        ax.plot(x, [_nan(v) for v in valid], "k--", marker="o", label="valid clients")
        for origin, by_date in trend_.counts.items():
            counts = [by_date.get(d) for d in trend_.dates]
            ax.plot(x, [_nan(c) for c in counts], marker="o", label=_literal(origin))
        if date in trend_.dates:
            ax.axvline(trend_.dates.index(date), color="#999", linewidth=0.8)
        step = -(-len(x) // 12)  # at most 12 labelled dates
        ax.set_xticks(x[::step], labels=trend_.dates[::step], fontsize=7, rotation=30 if len(x) > 6 else 0)
        ax.set_xlim(-0.5, len(x) - 0.5)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(bottom=0)
        ax.set_ylabel("clients")
        ax.set_title(_literal(f"{metric}: valid clients and the top origins per date"), fontsize=10)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
        fig.tight_layout()
        return _png(fig)
    finally:
        plt.close(fig)


# HTML

_STYLE = """
body{font-family:sans-serif;margin:1em 2em;max-width:72em;font-size:14px;color:#222}
h1{font-size:1.4em;margin:.2em 0}h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse;margin:.4em 0}td,th{border:1px solid #ccc;padding:.15em .5em}
td.n,th.n{text-align:right}td.t,th.t{text-align:left}
p{margin:.3em 0}.facts{color:#444}
.warn{background:#fff3cd;border:1px solid #e0b300;padding:.2em .5em;font-weight:bold}
.below{background:#fde2e1;color:#8a1c14;font-weight:bold}
.note{color:#555;font-size:.85em}
img.chart{display:block;max-width:100%}
.scroll{max-height:24em;overflow:auto;border:1px solid #ddd;display:inline-block}
table.origins th{position:sticky;top:0;background:#f4f4f4}
table.origins th button{all:unset;cursor:pointer;font-weight:bold}
table.origins th[aria-sort=ascending] button::after{content:" \\25B2"}
table.origins th[aria-sort=descending] button::after{content:" \\25BC"}
"""

# Sorting and filtering of the origin tables; numbers compare as numbers.
_SCRIPT = """
document.querySelectorAll('table.origins').forEach(function (table) {
  var body = table.tBodies[0];
  table.querySelectorAll('th button').forEach(function (button, column) {
    button.addEventListener('click', function () {
      var th = button.parentNode;
      var ascending = th.getAttribute('aria-sort') !== 'ascending';
      table.querySelectorAll('th').forEach(function (h) { h.removeAttribute('aria-sort'); });
      th.setAttribute('aria-sort', ascending ? 'ascending' : 'descending');
      var numeric = th.classList.contains('n');
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[column].getAttribute('data-v'), y = b.cells[column].getAttribute('data-v');
        var order = numeric ? Number(x) - Number(y) : x.localeCompare(y);
        if (order !== 0) { return ascending ? order : -order; }
        // ties keep the order of the origin list either way
        return Number(a.cells[0].getAttribute('data-v')) - Number(b.cells[0].getAttribute('data-v'));
      });
      var sorted = document.createDocumentFragment();  // one reflow, not one per row
      rows.forEach(function (row) { sorted.appendChild(row); });
      body.appendChild(sorted);
    });
  });
});
document.querySelectorAll('input.filter').forEach(function (input) {
  input.addEventListener('input', function () {
    var needle = input.value.trim().toLowerCase();
    var table = document.getElementById(input.getAttribute('data-table'));
    var shown = 0;
    Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
      var hit = row.cells[1].getAttribute('data-v').toLowerCase().indexOf(needle) !== -1;
      row.hidden = !hit;
      if (hit) { shown += 1; }
    });
    document.getElementById(input.getAttribute('data-count')).textContent = shown;
  });
});
"""


def _anchor(k: int) -> str:
    return f"metric-{k}"


def _distinct(values: list[int]) -> str:
    seen = list(dict.fromkeys(values))
    return " / ".join(str(v) for v in seen) if seen else "0"


def _below(valid: int, minimum: int | None) -> bool:
    return minimum is not None and valid < minimum


def _warning(minimum: int | None) -> str:
    title = "fewer valid clients than the minimum batch size"
    return f'<span class="below" title="{title}">&#9888; below {minimum}</span>'


def _server_text(ids: list[str]) -> str:
    named = [i for i in ids if i]
    if not named:
        return "a server not recorded in the table (loaded without --server-id)"
    text = " and ".join(f"server {i}" for i in named)
    return text + (" (and rows without a server id)" if len(named) < len(ids) else "")


def _overview(p: Page) -> str:
    e = html.escape
    held = (
        f"The database holds {len(p.dates)} date{'s' if len(p.dates) != 1 else ''}, "
        f"{e(p.dates[0])} to {e(p.dates[-1])}: the trend charts cover them all."
        if p.dates
        else "The database holds no results."
    )
    facts = f"Results of <b>{e(_server_text(p.servers))}</b> for <b>{e(p.date)}</b>. {held}"
    if p.min_batch_size:
        policy = (
            f'<p class="policy">Minimum batch size in force: <b>{p.min_batch_size}</b> valid clients '
            f"per batch; any count from fewer is marked {_warning(p.min_batch_size)}.</p>"
        )
    else:
        policy = (
            '<p class="policy warn">&#9888; No minimum batch size in force: counts are shown however few '
            "clients they come from (set --min-batch-size or MIN_BATCH_SIZE to the servers' minimum).</p>"
        )
    rows = []
    for k, m in enumerate(p.metrics):
        valid = [part.valid for part in m.parts]
        low = [v for v in valid if _below(v, p.min_batch_size)]
        rows.append(
            f'<tr><td class="t"><a href="#{_anchor(k)}">{e(m.name)}</a></td>'
            f'<td class="n">{len(m.origins)}</td><td class="n">{m.count_sum}</td>'
            f'<td class="n">{_distinct([part.total for part in m.parts])}</td>'
            f'<td class="n">{_distinct(valid)}{" " + _warning(p.min_batch_size) if low else ""}</td>'
            f'<td class="n">{_distinct([part.error for part in m.parts])}</td></tr>'
        )
    table = (
        '<table class="overview"><thead><tr><th class="t">metric</th><th class="n">origins</th>'
        '<th class="n">sum of counts</th><th class="n">clients</th><th class="n">valid</th>'
        '<th class="n">errors</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table>"
        if rows
        else "<p>No results for this date.</p>"
    )
    by_stage: dict[str, list[Reject]] = defaultdict(list)
    for r in p.rejects:
        by_stage[r.stage].append(r)
    reject_text = "; ".join(
        f"{stage} rejected {sum(r.count for r in listed)} ("
        + ", ".join(f"{e(r.reason)}: {r.count}" for r in listed)
        + ")"
        for stage, listed in by_stage.items()
    )
    rejects_line = (
        f'<p class="rejects">Rejects: {reject_text} &mdash; <a href="#rejects">details</a>.</p>'
        if p.rejects
        else '<p class="rejects">Rejects: none in the database for this date.</p>'
    )
    parts_note = (
        '<p class="note">Clients, valid and errors are per batch part (a metric\'s origins are split over '
        'batches); counts of <a href="#special">PAGELOAD and __UNKNOWN__</a> are not sites.</p>'
    )
    return (
        f'<section id="overview"><h1>Origin telemetry, {e(p.date)}</h1><p class="facts">{facts}</p>'
        f"{policy}{table}{rejects_line}{parts_note}</section>"
    )


def _origin_cell(origin: str) -> str:
    e = html.escape
    note = SPECIAL_ORIGINS.get(origin)
    extra = f' <span class="note special">({e(note)})</span>' if note else ""
    return f'<td class="t" data-v="{e(origin)}">{e(origin)}{extra}</td>'


def _metric_section(k: int, m: Metric, p: Page, top: int) -> str:
    e = html.escape
    trend_png = base64.b64encode(trend_chart_png(m.name, p.trends[m.name], p.date)).decode("ascii")
    top_counts = [(o.origin, o.count) for o in m.top(top)]
    tied = sum(1 for o in m.top(len(m.origins))[top:] if top_counts and o.count == top_counts[-1][1])
    top_png = base64.b64encode(bar_chart_png(m.name, top_counts, tied)).decode("ascii")
    part_rows = "".join(
        f'<tr><td class="n">{part.first_index}&ndash;{part.first_index + part.origins - 1}</td>'
        f'<td class="n">{part.total}</td><td class="n">{part.error}</td><td class="n">{part.valid}'
        f"{' ' + _warning(p.min_batch_size) if _below(part.valid, p.min_batch_size) else ''}</td></tr>"
        for part in m.parts
    )
    origin_rows = "".join(
        f'<tr><td class="n" data-v="{o.index}">{o.index}</td>{_origin_cell(o.origin)}'
        f'<td class="n" data-v="{o.count}">{o.count}</td>'
        f'<td class="n" data-v="{o.count / o.valid if o.valid > 0 else 0:.6f}">'
        f"{f'{100 * o.count / o.valid:.1f}%' if o.valid > 0 else '&ndash;'}</td></tr>"
        for o in m.origins
    )
    table_id = f"origins-{k}"
    low = any(_below(part.valid, p.min_batch_size) for part in m.parts)
    return (
        f'<section class="metric" id="{_anchor(k)}"><h2>{e(m.name)}'
        f"{' ' + _warning(p.min_batch_size) if low else ''}</h2>"
        f'<img class="chart trend" alt="trend of {e(m.name)}" src="data:image/png;base64,{trend_png}">'
        f'<img class="chart top" alt="top origins of {e(m.name)}" src="data:image/png;base64,{top_png}">'
        f"<p>Sum of counts over all origins: <b>{m.count_sum}</b></p>"
        '<table class="parts"><thead><tr><th class="n">origin indexes</th><th class="n">clients</th>'
        '<th class="n">errors</th><th class="n">valid</th></tr></thead>'
        f"<tbody>{part_rows}</tbody></table>"
        f'<p><label>Search origins: <input type="search" class="filter" data-table="{table_id}" '
        f'data-count="{table_id}-shown"></label> <span id="{table_id}-shown">{len(m.origins)}</span> '
        f"of {len(m.origins)} origins shown; click a heading to sort.</p>"
        f'<div class="scroll"><table class="origins" id="{table_id}"><thead><tr>'
        '<th class="n"><button type="button">index</button></th>'
        '<th class="t"><button type="button">origin</button></th>'
        '<th class="n"><button type="button">count</button></th>'
        '<th class="n"><button type="button">of valid clients</button></th>'
        f"</tr></thead><tbody>{origin_rows}</tbody></table></div></section>"
    )


def _rejects_section(p: Page) -> str:
    if not p.rejects:
        return ""
    e = html.escape
    rows = "".join(
        f'<tr><td class="t">{e(r.stage)}</td><td class="t">{e(r.reason)}</td><td class="n">{r.count}</td>'
        f'<td class="t">{e(r.example)}</td></tr>'
        for r in p.rejects
    )
    return (
        '<section id="rejects"><h2>Rejects</h2><p>What staging (pings and entries) and index (batches) could '
        "not use for this date, by reason, as insert loaded them into the rejects table.</p>"
        '<table><thead><tr><th class="t">stage</th><th class="t">reason</th><th class="n">count</th>'
        f'<th class="t">for example</th></tr></thead><tbody>{rows}</tbody></table></section>'
    )


def _special_section() -> str:
    e = html.escape
    items = "".join(f"<li><b>{e(name)}</b>: {e(text)}</li>" for name, text in SPECIAL_ORIGINS.items())
    return f'<section id="special"><h2>Origins that are not sites</h2><ul>{items}</ul></section>'


def render(p: Page, top: int = DEFAULT_TOP) -> str:
    """The HTML page of one date."""
    sections = "".join(_metric_section(k, m, p, top) for k, m in enumerate(p.metrics))
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Origin telemetry {html.escape(p.date)}</title><style>{_STYLE}</style></head><body>"
        f"{_overview(p)}{sections}{_rejects_section(p)}{_special_section()}"
        f"<script>{_SCRIPT}</script></body></html>"
    )
