"""The HTML site in a real browser (headless Chromium through selenium): loads without console errors,
sorting a column reorders the rows, a row page shows its record.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them). Outside CI (``WDRO_CI`` unset)
the test is skipped, with the reason, where they are missing; in CI a missing browser fails it."""

from __future__ import annotations

import os
import shutil

import pytest

from results_helpers import accuracy
from wdro_finetune.results.leaderboard import build_leaderboards

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage")

if not (CHROMIUM and DRIVER) and not os.environ.get("WDRO_CI"):
    pytest.skip("headless Chromium test: install Debian's chromium and chromium-driver (apt-get install chromium "
                "chromium-driver) to run it", allow_module_level=True)


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS + (f"--user-data-dir={tmp_path / 'chromium-profile'}",):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def site(make_record, write_records, tmp_path):
    recs = [make_record(f"r{i}", {"clean_acc": accuracy(clean, 1000), "autoattack_acc": accuracy(aa, 1000)},
                        method=method, checkpoint_sha256=f"{i}" * 64)
            for i, (method, clean, aa) in enumerate([("alpha", 990, 860), ("beta", 970, 880), ("gamma", 980, 870)])]
    build_leaderboards(write_records(recs), tmp_path / "lb", html_dir=tmp_path / "site")
    return tmp_path / "site"


def _errors(driver) -> list[dict]:
    return [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]


def _column(driver, index: int) -> list[str]:
    from selenium.webdriver.common.by import By

    rows = driver.find_elements(By.CSS_SELECTOR, "table.board tbody tr")
    return [r.find_elements(By.TAG_NAME, "td")[index].text for r in rows if r.is_displayed()]


def test_index_loads_clean_sorts_by_a_clicked_column_and_filters(browser, site):
    from selenium.webdriver.common.by import By

    browser.get((site / "index.html").as_uri())
    assert _errors(browser) == []
    assert _column(browser, 2) == ["beta", "gamma", "alpha"]  # ranked by AutoAttack
    clean = browser.find_element(By.CSS_SELECTOR, "table.board th[data-key='clean_acc']")
    clean.click()
    assert _column(browser, 3) == ["97.00", "98.00", "99.00"] and clean.get_attribute("aria-sort") == "ascending"
    clean.click()
    assert _column(browser, 2) == ["alpha", "gamma", "beta"]
    browser.find_element(By.ID, "filter").send_keys("gam")
    assert _column(browser, 2) == ["gamma"]
    assert _errors(browser) == []


def test_row_page_shows_the_record(browser, site):
    from selenium.webdriver.common.by import By

    browser.get((site / "index.html").as_uri())
    browser.find_element(By.LINK_TEXT, "mnist-smallcnn").click()  # the first row: beta
    assert browser.find_element(By.TAG_NAME, "h1").text == "mnist-smallcnn / beta"
    records = browser.find_elements(By.CSS_SELECTOR, "pre.record")
    assert len(records) == 1 and '"record_id": "r1"' in records[0].text and "1" * 64 in records[0].text
    assert _errors(browser) == []
