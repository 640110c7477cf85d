"""report.html in headless Chromium (Debian `chromium`, driven by Playwright for Python).

Checks what a reviewer relies on: the summary table renders, an episode video loads (metadata, positive
duration, no media error), the filters change the visible cards, the "same episode across N" view shows
one video per N, and text from files never runs as script. Skipped, with the reason, only where no
Chromium binary is installed (CI installs it: `apt-get install -y chromium`, `pip install playwright`).
"""
from __future__ import annotations

import functools
import http.server
import shutil
import threading

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"),
                             "/usr/bin/chromium") if p and shutil.os.path.exists(p)), None)
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def page_url(report_out):
    """Serve the folder holding run_a/ and out/ on 127.0.0.1 so relative video links resolve."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(report_out.parent))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/out/report.html"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture(scope="module")
def page(page_url):
    if CHROMIUM is None:
        pytest.skip("Chromium not found (install Debian's `chromium` package to run the HTML test)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        problems: list[str] = []
        pg.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        pg.on("dialog", lambda d: (problems.append(f"dialog opened: {d.message}"), d.dismiss()))
        pg.goto(page_url, wait_until="load")
        pg.problems = problems
        yield pg
        browser.close()


def visible_cards(pg) -> int:
    return pg.locator("#cards .ep").count()


def test_summary_table_present(page):
    rows = page.locator("#summary-table tbody tr")
    assert rows.count() == 9  # 2 tasks x 3 N + 3 all-tasks rows
    assert "(all tasks)" in page.locator("#summary-table").inner_text()
    assert page.locator(".banner.danger").is_visible()  # random-init CLIP warning


def test_gallery_video_is_playable(page):
    page.locator("#gallery").scroll_into_view_if_needed()
    video = page.locator("#cards video").first
    video.scroll_into_view_if_needed()
    page.wait_for_function(
        "() => { const v = document.querySelector('#cards video');"
        " return v && (v.readyState >= 1 || v.error); }", timeout=15000)
    state = video.evaluate("v => ({ready: v.readyState, duration: v.duration, error: v.error && v.error.code,"
                           " src: v.currentSrc})")
    assert state["error"] is None, state
    assert state["ready"] >= 1 and state["duration"] > 0, state
    assert "/run_a/videos/" in state["src"]


def test_filters_change_visible_cards(page):
    total = visible_cards(page)
    assert total == 18  # one page holds all 18 episodes
    page.locator("#f-outcome button", has_text="success").click()  # hide successes
    after = visible_cards(page)
    assert 0 < after < total
    assert page.locator("#cards .ep.success").count() == 0
    page.locator("#f-outcome button", has_text="success").click()
    page.locator("#f-n button", has_text="N=10").click()  # hide N=10
    assert visible_cards(page) == 12
    page.locator("#f-n button", has_text="N=10").click()
    page.locator("#f-task").select_option(index=1)
    assert visible_cards(page) == 9
    assert page.locator("#count").inner_text().startswith("9 of 18")


def test_same_episode_across_n(page):
    cards = page.locator("#across-cards .ep")
    assert cards.count() == 3
    assert [c.inner_text().split("N=")[1].split()[0] for c in cards.all()] == ["1", "5", "10"]
    page.locator("#x-key").select_option(index=2)
    assert page.locator("#across-cards video").count() == 3


def test_no_script_from_file_text_ran(page):
    assert page.problems == []
    assert "<b>alphabet</b>" in page.locator("#f-task").inner_text()  # shown as text, not markup


def test_suite_table_first_with_pooled_row_and_posters(page):
    headings = [h.inner_text() for h in page.locator("main > section > h2").all()]
    assert headings[0].startswith("Suite")  # the summary opens the page; run metadata is folded at the end
    assert page.locator("#runs details").get_attribute("open") is None
    rows = page.locator("#suite-table tbody tr")
    assert rows.count() == 3  # pooled suite row + 2 tasks
    first = rows.first.inner_text()
    assert "suite (pooled)" in first and "[" in first  # the suite row carries its Wilson interval
    poster = page.locator("#cards video").first.get_attribute("poster")
    assert poster and poster.endswith(".jpg")
    page.locator("#published-table").wait_for(state="attached")  # run.json says libero_spatial
    assert "OpenVLA" in page.locator("#published-table").inner_text()
