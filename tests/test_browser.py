"""The search page in headless Chromium (Debian's chromium + chromedriver, via Selenium):
type a query, see results with highlights and per-retriever ranks; save a screenshot
to artifacts/search-page.png."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_api import run_in_thread
from twofold.app.settings import Settings
from twofold.indexing.build import build_collection
from twofold.indexing.buildctx import BuildOptions

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def page_collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("page") / "cranfield"
    build_collection(ROOT / "data" / "cranfield", out, BuildOptions(progress=False))
    return out


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
        pytest.skip("chromium/chromedriver not installed (make browser, or apt-get install)")
    webdriver = pytest.importorskip("selenium.webdriver")
    profile = tempfile.mkdtemp(prefix="twofold-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--window-size=1100,900",
    ):
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_type_a_query_and_see_results(browser: object, page_collection: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    assert isinstance(browser, WebDriver)
    with run_in_thread(Settings(collections=[page_collection], warmup=False)) as base:
        browser.get(base + "/")
        wait = WebDriverWait(browser, 30)
        picker = wait.until(ec.presence_of_element_located((By.ID, "pipeline")))
        wait.until(lambda d: len(Select(picker).options) > 0)
        options = [o.text for o in Select(picker).options]
        assert options == ["bm25", "hybrid", "hybrid-rrf"]
        assert Select(picker).first_selected_option.text == "hybrid"
        Select(picker).select_by_visible_text("bm25")
        box = browser.find_element(By.ID, "q")
        box.send_keys("boundary layer heat transfer", Keys.ENTER)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results li.hit")) == 10)
        hits = browser.find_elements(By.CSS_SELECTOR, "#results li.hit")
        first = hits[0]
        assert first.find_element(By.CSS_SELECTOR, ".title").text
        marks = {m.text.lower() for m in first.find_elements(By.TAG_NAME, "mark")}
        assert marks & {"heat", "transfer", "boundary", "layer", "layers"}
        assert first.find_element(By.CSS_SELECTOR, ".source").text == "bm25 #1"
        status = browser.find_element(By.ID, "status").text
        assert status.startswith("10 results · bm25")
        ARTIFACTS.mkdir(exist_ok=True)
        assert browser.save_screenshot(str(ARTIFACTS / "search-page.png"))

        # an error is shown, not swallowed: an empty query is refused by the form itself,
        # a blank one by the API with its message
        box.clear()
        box.send_keys("   ", Keys.ENTER)
        wait.until(lambda d: "blank" in d.find_element(By.ID, "status").text)
        assert browser.find_elements(By.CSS_SELECTOR, "#results li.hit") == []
