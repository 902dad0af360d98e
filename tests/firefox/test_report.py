"""The HTML report: its content from a real database, and the page in headless Chromium.

The browser tests check every chart shows, that the overview is above the fold at
1280 px, that an origin table sorts on a click and filters as one types, that the
page asks nothing of the network; the last one runs bin/integrate-firefox for three
dates and checks the page shows all of them.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from prio_processor.firefox import database, report
from prio_processor.firefox.commands import entry_point

from tests_support import script_env

DATES = ("2019-06-24", "2019-06-25", "2019-06-26")
DATE = DATES[-1]
METRICS = ("content.blocking_blocked", "content.blocking_opener_exempt", "content.blocking_<script>")
MIN_BATCH_SIZE = 45
ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _rows(date: str, metric: str, number: int, day: int) -> list[dict]:
    """Two parts of 30 and 10 origins; the more errors, the higher `number`."""
    out = []
    errors = (number * 3, 0)
    for part, (start, length) in enumerate(((0, 30), (30, 10))):
        for i in range(start, start + length):
            name = "PAGELOAD" if i == 0 else "__UNKNOWN__" if i == 39 else f"origin-{i}.example"
            out.append(
                {
                    "submission_date": date,
                    "batch_id": metric,
                    "origin": name,
                    "hash": f"h{i}",
                    "index": i,
                    "aggregate": (i * 7 + number + day) % 23,
                    "error": errors[part],
                    "total": 50 + part,
                    "id": f"{metric}-{date}-{part}",
                    "timestamp": f"{date}T10:00:00",
                    "server_id": "B",
                }
            )
    return out


STAGING_REJECTS: list[dict[str, Any]] = [
    {"id": None, "reason": "bad_json", "detail": "line 3 is not JSON"},
    {"id": "p1", "reason": "unknown_encoding", "detail": "encoding x-0 is unknown", "entry": 0},
    {"id": "p2", "reason": "unknown_encoding", "detail": "encoding x-1 is unknown", "entry": 1},
]


def _database(path: Path) -> Path:
    for day, date in enumerate(DATES):
        rows = [r for n, m in enumerate(METRICS) for r in _rows(date, m, n, day)]
        rejects = [database.check_reject(r, "staging", date) for r in STAGING_REJECTS[: day + 1]]
        database.replace_date(str(path), date, rows, rejects=rejects)
    return path


def _report(db: Path, output: Path, *extra: str) -> Any:
    args = ["report", "--database", str(db), "--output", str(output), "--top", "12", *extra]
    return CliRunner().invoke(entry_point, args)


@pytest.fixture
def page_file(tmp_path) -> Path:
    db = _database(tmp_path / "results.sqlite")
    result = _report(db, tmp_path / "report", "--min-batch-size", str(MIN_BATCH_SIZE), "--date", DATE)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [str(tmp_path / "report" / f"{DATE}.html")]
    return tmp_path / "report" / f"{DATE}.html"


def test_page_content(page_file):
    text = page_file.read_text()
    overview = text[text.index('<section id="overview">') : text.index('<section class="metric"')]
    assert "server B" in overview and "3 dates, 2019-06-24 to 2019-06-26" in overview
    assert f"Minimum batch size in force: <b>{MIN_BATCH_SIZE}</b>" in overview
    # Every metric in the overview, linked to its section, with its sum, clients, valid and errors.
    for k, metric in enumerate(sorted(METRICS)):
        name = metric.replace("<", "&lt;").replace(">", "&gt;")
        assert f'<a href="#metric-{k}">{name}</a>' in overview
        assert f'<section class="metric" id="metric-{k}"><h2>{name}' in text
        number = METRICS.index(metric)
        count_sum = sum(r["aggregate"] for r in _rows(DATE, metric, number, 2))
        valid = f"{50 - 3 * number} / 51" if number else "50 / 51"
        assert re.search(rf">{count_sum}</td><td class=\"n\">50 / 51</td><td class=\"n\">{valid}", overview)
    # Part 0 of the third metric (44 valid clients) is below the minimum: marked in the overview,
    # its heading and its parts table; the others are not.
    assert overview.count("&#9888; below 45") == 1 + 1  # the policy line shows the mark once
    assert text.count("&#9888; below 45") == 4
    assert "staging rejected 3 (bad_json: 1, unknown_encoding: 2)" in overview
    assert '<section id="rejects">' in text and "encoding x-0 is unknown" in text
    # Every origin in the sortable tables; the special ones explained where they appear.
    assert text.count('<table class="origins"') == len(METRICS)
    assert len(re.findall(r'<td class="n" data-v="\d+">\d+</td><td class="t" data-v=', text)) == 40 * 3
    assert text.count(report.SPECIAL_ORIGINS["PAGELOAD"]) == len(METRICS) + 1
    assert text.count(html_escape(report.SPECIAL_ORIGINS["__UNKNOWN__"])) == len(METRICS) + 1
    assert text.count('<img class="chart trend"') == text.count('<img class="chart top"') == len(METRICS)
    assert "content.blocking_&lt;script&gt;" in text and "<script>" in text  # only the page's own script
    assert text.count("<script>") == 1
    assert "http://" not in text and "https://" not in text and "src=\"data:image/png" in text


def html_escape(text: str) -> str:
    import html

    return html.escape(text)


def test_trends_cover_every_date_of_the_database(tmp_path):
    db = _database(tmp_path / "results.sqlite")
    page = report.page(str(db), DATES[1])
    assert page.dates == list(DATES) and page.servers == ["B"]
    trend = page.trends["content.blocking_opener_exempt"]
    assert trend.valid == {"2019-06-24": 47, "2019-06-25": 47, "2019-06-26": 47}
    (metric,) = [m for m in page.metrics if m.name == "content.blocking_opener_exempt"]
    top = metric.top(report.TREND_ORIGINS)
    assert list(trend.counts) == [o.origin for o in top]
    first = top[0]
    assert trend.counts[first.origin] == {
        d: (first.index * 7 + 1 + day) % 23 for day, d in enumerate(DATES)
    }


def test_no_minimum_batch_size_is_a_visible_warning(tmp_path):
    db = _database(tmp_path / "results.sqlite")
    assert _report(db, tmp_path / "out", "--date", DATE).exit_code == 0
    text = (tmp_path / "out" / f"{DATE}.html").read_text()
    assert '<p class="policy warn">&#9888; No minimum batch size in force' in text
    assert "below" not in text.split('<p class="policy warn">', 1)[1].split("</p>", 1)[1]


@pytest.mark.parametrize("bad", ["../../escaped", "ABSOLUTE", "2019-02-30"])
def test_report_writes_pages_only_for_dates_inside_its_output(tmp_path, bad):
    bad = str(tmp_path / "absolute") if bad == "ABSOLUTE" else bad
    db = _database(tmp_path / "results.sqlite")
    rows = [{**r, "submission_date": bad} for r in _rows(DATE, METRICS[0], 0, 0)]
    with database.connect(str(db)) as conn:  # as a hostile or broken writer would
        conn.executemany(
            f"INSERT INTO content_blocking VALUES ({', '.join('?' for _ in database.COLUMNS)})",
            [database.check_row(r) for r in rows],
        )
    output = tmp_path / "a" / "b" / "out"
    before = set(tmp_path.rglob("*"))
    result = CliRunner().invoke(entry_point, ["report", "--database", str(db), "--output", str(output)])
    assert result.exit_code == 0, result.output
    written = set(tmp_path.rglob("*")) - before
    assert {p for p in written if p.is_file()} == {output / f"{d}.html" for d in DATES}
    assert result.stdout.splitlines() == [str(output / f"{d}.html") for d in DATES]
    assert result.stderr.splitlines() == [
        f"report: 1 of 4 submission_date values in content_blocking are not YYYY-MM-DD, "
        f"left out of every page: {bad!r}"
    ]


def test_a_database_made_before_server_ids_and_rejects(tmp_path):
    db = tmp_path / "old.sqlite"
    old = [c for c in database.SCHEMA if c.name != "server_id"]
    with database.connect(str(db)) as conn:
        columns = ", ".join(f'"{c.name}" {c.sqlite}' for c in old)
        conn.execute(f"CREATE TABLE content_blocking ({columns})")
        conn.executemany(
            f"INSERT INTO content_blocking VALUES ({', '.join('?' for _ in old)})",
            [database.check_row(r)[:-1] for r in _rows(DATE, METRICS[0], 0, 0)],
        )
    result = _report(db, tmp_path / "out")
    assert result.exit_code == 0, result.output
    text = (tmp_path / "out" / f"{DATE}.html").read_text()
    assert "a server not recorded in the table" in text and "Rejects: none in the database" in text


def test_dollar_signs_are_shown_as_they_are(tmp_path):
    db = tmp_path / "results.sqlite"
    rows = _rows(DATE, "content.blocking_$_$", 0, 0)
    rows[3]["origin"] = "pay$_$.example"
    rows[4]["origin"] = r"$\frac$"
    database.replace_date(str(db), DATE, rows)
    result = _report(db, tmp_path / "out")
    assert result.exit_code == 0, result.output
    text = (tmp_path / "out" / f"{DATE}.html").read_text()
    assert "content.blocking_$_$" in text and "pay$_$.example" in text and r"$\frac$" in text


# In the browser


@contextmanager
def browser_page(profile: str, width: int = 1000, height: int = 800) -> Iterator[tuple[Any, list[str]]]:
    """A Chromium page, with the list of every request it made that was not a file: or data: URL."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": width, "height": height},
        )
        try:
            page = browser.new_page()
            outside: list[str] = []
            page.on(
                "request",
                lambda request: outside.append(request.url)
                if not request.url.startswith(("file:", "data:"))
                else None,
            )
            yield page, outside
        finally:
            browser.close()


def chart_problems(page_file: Path, profile: str) -> tuple[list[str], list[str]]:
    """(metric headings, problems): a chart that did not load, is not laid out, or is blank."""
    from PIL import Image

    with browser_page(profile) as (page, outside):
        page.goto(page_file.as_uri())
        page.wait_for_load_state("load")
        charts = page.eval_on_selector_all(
            "img.chart",
            "imgs => imgs.map(i => ({complete: i.complete, w: i.naturalWidth, h: i.naturalHeight,"
            " shown: i.getBoundingClientRect().width, alt: i.alt}))",
        )
        headings = page.eval_on_selector_all(
            "section.metric h2", "hs => hs.map(h => h.firstChild.textContent)"
        )
        shots = [page.locator("img.chart").nth(k).screenshot() for k in range(len(charts))]
    assert outside == []
    problems = []
    for chart, shot in zip(charts, shots):
        if not (chart["complete"] and chart["w"] > 100 and chart["h"] > 100 and chart["shown"] > 100):
            problems.append(f"{chart['alt']}: not shown ({chart})")
            continue
        image = Image.open(io.BytesIO(shot)).convert("L")
        low, high = image.getextrema()
        assert isinstance(low, int) and isinstance(high, int)  # one band: (darkest, lightest)
        dark = sum(image.histogram()[:200])
        if high - low < 100 or dark < 0.01 * image.width * image.height:
            problems.append(f"{chart['alt']}: blank")
    return headings, problems


@pytest.mark.browser
def test_every_chart_shows_in_chromium(page_file, tmp_path):
    headings, problems = chart_problems(page_file, tempfile.mkdtemp(dir=tmp_path))
    assert [h.strip() for h in headings] == sorted(METRICS)
    assert problems == []


@pytest.mark.browser
def test_the_chromium_check_sees_a_broken_chart(page_file, tmp_path):
    text = page_file.read_text()
    start = text.index("data:image/png;base64,") + len("data:image/png;base64,")
    broken = page_file.with_name("broken.html")
    broken.write_text(text[:start] + "AAAA" + text[start + 4 :])
    _, problems = chart_problems(broken, tempfile.mkdtemp(dir=tmp_path))
    assert len(problems) == 1 and "not shown" in problems[0]


def _first_rows(page: Any, table: str, n: int) -> list[list[str]]:
    return page.eval_on_selector_all(
        f"#{table} tbody tr:not([hidden])",
        f"rows => rows.slice(0, {n}).map(r => Array.from(r.cells).map(c => c.getAttribute('data-v')))",
    )


@pytest.mark.browser
def test_overview_above_the_fold_and_the_origin_table_sorts_and_filters(page_file, tmp_path):
    from PIL import Image

    with browser_page(tempfile.mkdtemp(dir=tmp_path), 1280, 720) as (page, outside):
        page.goto(page_file.as_uri())
        page.wait_for_load_state("load")
        box = page.locator("#overview").bounding_box()
        shot = Image.open(io.BytesIO(page.screenshot())).convert("L")
        # A click on a metric's count heading sorts its origins by count, largest first on a second click.
        table = "origins-1"  # content.blocking_blocked
        heading = page.locator(f"#{table} th button", has_text="count")
        heading.scroll_into_view_if_needed()
        heading.click()
        ascending = _first_rows(page, table, 3)
        heading.click()
        descending = _first_rows(page, table, 3)
        sort_state = page.locator(f"#{table} th[aria-sort]").get_attribute("aria-sort")
        page.locator(f"input[data-table={table}]").fill("origin-3")
        filtered = _first_rows(page, table, 50)
        shown = page.locator(f"#{table}-shown").text_content()
    assert outside == []
    # The whole overview (heading, whose results, policy, metrics table, rejects) fits in 1280 x 720.
    assert box is not None and box["y"] >= 0 and box["y"] + box["height"] <= 720, box
    assert shot.size == (1280, 720)
    top_band = shot.crop((0, 0, 1280, int(box["y"] + box["height"])))
    darkest = top_band.getextrema()[0]
    assert isinstance(darkest, int) and darkest < 100  # text is drawn there
    rows = _rows(DATE, "content.blocking_blocked", 0, 2)
    by_count = sorted(rows, key=lambda r: (r["aggregate"], r["index"]))
    assert [int(r[2]) for r in ascending] == [r["aggregate"] for r in by_count[:3]]
    largest = max(r["aggregate"] for r in rows)
    first_largest = min(r["index"] for r in rows if r["aggregate"] == largest)
    assert descending[0][2] == str(largest) and descending[0][0] == str(first_largest)
    assert sort_state == "descending"
    expected = [r for r in rows if "origin-3" in r["origin"]]
    assert [r[1] for r in filtered] == [r["origin"] for r in sorted(expected, key=lambda r: -r["aggregate"])]
    assert shown == str(len(expected))


# Three dates of bin/integrate-firefox


def _two_metrics(tmp_path: Path) -> Path:
    batches = json.loads((ROOT / "config" / "content.json").read_text())
    kept = [b for b in batches if b["batch_id"].rsplit("-", 1)[0] in INTEGRATED]
    path = tmp_path / "two-metrics.json"
    path.write_text(json.dumps(kept))
    return path


INTEGRATED = ("content.blocking_blocked", "content.blocking_opener_exempt_TESTONLY")


@pytest.mark.slow
@pytest.mark.browser
def test_a_report_over_three_dates_of_integrate_firefox(tmp_path):
    results = tmp_path / "results-a.sqlite"
    config = _two_metrics(tmp_path)
    for date in DATES:
        run = subprocess.run(
            [
                str(ROOT / "bin" / "integrate"),
                "--source",
                "firefox",
                "--data-config",
                str(config),
                "--n-pings",
                "3",
                "--server-b-delay",
                "0.5",
                "--report",
                str(tmp_path / "report"),
                "--database",
                str(results),
            ],
            env=script_env(SUBMISSION_DATE=date),
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert run.returncode == 0, run.stderr[-4000:]
        assert run.stdout.splitlines()[-1] == str(tmp_path / "report" / f"{date}.html")
    assert report.dates(str(results)) == list(DATES)
    page = report.page(str(results), DATE)
    assert page.servers == ["A"]
    # staging's planted rejects of every date are in the database: one of each reason
    assert [(r.stage, r.reason, r.count) for r in page.rejects] == [
        ("staging", reason, 1)
        for reason in ("bad_base64", "bad_json", "bad_ping", "missing_share", "unknown_encoding")
    ]
    for trend in page.trends.values():
        assert set(trend.valid) == set(DATES) and all(v > 0 for v in trend.valid.values())
        assert all(set(counts) == set(DATES) for counts in trend.counts.values())

    page_file = tmp_path / "report" / f"{DATE}.html"
    text = page_file.read_text()
    assert "Results of <b>server A</b>" in text and "3 dates, 2019-06-24 to 2019-06-26" in text
    assert "staging rejected 5 (bad_base64: 1, bad_json: 1, bad_ping: 1, missing_share: 1," in text
    assert "No minimum batch size in force" in text
    assert text.count(report.SPECIAL_ORIGINS["PAGELOAD"]) == len(INTEGRATED) + 1
    headings, problems = chart_problems(page_file, tempfile.mkdtemp(dir=tmp_path))
    assert [h.strip() for h in headings] == sorted(INTEGRATED) and problems == []
    with browser_page(tempfile.mkdtemp(dir=tmp_path), 1280, 720) as (browser, outside):
        browser.goto(page_file.as_uri())
        counts = browser.eval_on_selector_all("table.origins", "ts => ts.map(t => t.tBodies[0].rows.length)")
        box = browser.locator("#overview").bounding_box()
    assert outside == [] and counts == [2487, 2487]
    assert box is not None and box["y"] + box["height"] <= 720
