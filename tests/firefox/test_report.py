"""The HTML report, rendered in headless Chromium: every chart must show."""

from __future__ import annotations

import io
import shutil
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from prio_processor.firefox import database
from prio_processor.firefox.commands import entry_point

DATE = "2019-06-26"
METRICS = ("content.blocking_blocked", "content.blocking_opener_exempt", "content.blocking_<script>")
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


def _rows(metric: str, number: int) -> list[dict]:
    out = []
    for part, (start, length, error) in enumerate(((0, 30, number), (30, 10, 0))):
        for i in range(start, start + length):
            out.append(
                {
                    "submission_date": DATE,
                    "batch_id": metric,
                    "origin": f"origin-{i}.example",
                    "hash": f"h{i}",
                    "index": i,
                    "aggregate": (i * 7 + number) % 23,
                    "error": error,
                    "total": 50 + part,
                    "id": f"{metric}-{part}",
                    "timestamp": f"{DATE}T10:00:00",
                }
            )
    return out


@pytest.fixture
def page_file(tmp_path) -> Path:
    db = tmp_path / "results.sqlite"
    database.replace_date(str(db), DATE, [r for n, m in enumerate(METRICS) for r in _rows(m, n)])
    result = CliRunner().invoke(
        entry_point,
        [
            "report",
            "--database",
            str(db),
            "--output",
            str(tmp_path / "report"),
            "--top",
            "12",
            "--min-batch-size",
            "100",
        ],
    )
    assert result.exit_code == 0, result.output
    return tmp_path / "report" / f"{DATE}.html"


def test_page_content(page_file):
    text = page_file.read_text()
    assert text.count('<img class="chart"') == len(METRICS)
    assert "content.blocking_&lt;script&gt;" in text and "<script>" not in text
    assert "Minimum batch size in force: 100" in text
    assert "http://" not in text and "https://" not in text  # self-contained


def chart_problems(page_file: Path, profile: str) -> tuple[list[str], list[str]]:
    """(metric headings, problems): a chart that did not load, is not laid out, or is blank."""
    from PIL import Image
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1000, "height": 800},
        )
        try:
            page = browser.new_page()
            page.goto(page_file.as_uri())
            page.wait_for_load_state("load")
            charts = page.eval_on_selector_all(
                "img.chart",
                "imgs => imgs.map(i => ({complete: i.complete, w: i.naturalWidth, h: i.naturalHeight,"
                " shown: i.getBoundingClientRect().width, alt: i.alt}))",
            )
            headings = page.eval_on_selector_all("section.metric h2", "hs => hs.map(h => h.textContent)")
            shots = [page.locator("img.chart").nth(k).screenshot() for k in range(len(charts))]
        finally:
            browser.close()
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
    assert headings == sorted(METRICS)
    assert problems == []


@pytest.mark.browser
def test_the_chromium_check_sees_a_broken_chart(page_file, tmp_path):
    text = page_file.read_text()
    start = text.index("data:image/png;base64,") + len("data:image/png;base64,")
    broken = page_file.with_name("broken.html")
    broken.write_text(text[:start] + "AAAA" + text[start + 4 :])
    _, problems = chart_problems(broken, tempfile.mkdtemp(dir=tmp_path))
    assert len(problems) == 1 and "not shown" in problems[0]
