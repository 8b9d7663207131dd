"""The web page in a real headless browser (Debian's chromium + chromedriver, driven by selenium).

Upload a crop of a stored photo and see the right match with its box on both images; the random
image button; the page of one image and its lineage tree. Skipped only when chromium or chromedriver is missing
(.ci/run installs both).
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
from PIL import Image
from webserver import WRITE_KEY, LiveServer

from engine import db
from engine.provenance import link_pending

POOL = Path(__file__).parent / "data" / "pool"
STORED = ["photos/palapeli__cincinnati-bridge.jpg", "photos/skimage__chelsea.jpg", "photos/gcompris__tajMahal.jpg"]
CROP = (0.1, 0.2, 0.8, 0.9)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                                reason="needs Debian's chromium and chromium-driver (apt-get install chromium "
                                       "chromium-driver; .ci/run does)")


@pytest.fixture(scope="module")
def site(database_url):
    server = LiveServer(api_keys=(WRITE_KEY,), semantic=True)  # stored images get embeddings (the similar view)
    ids = {}
    with server.client(WRITE_KEY) as client:
        for rel in STORED:
            r = client.post("/api/images", content=(POOL / rel).read_bytes(), params={"uri": f"https://example.org/{rel}"})
            assert r.status_code == 201, r.text
            ids[rel] = r.json()["id"]
        # a crop of the Taj Mahal (never a query below), linked to its source: the lineage shown on its page
        taj = Image.open(POOL / STORED[2]).convert("RGB")
        w, h = taj.size
        buf = io.BytesIO()
        taj.crop((int(.2 * w), int(.1 * h), int(.8 * w), int(.9 * h))).save(buf, "JPEG", quality=90)
        r = client.post("/api/images", content=buf.getvalue(), params={"uri": "https://example.org/taj-crop.jpg"})
        assert r.status_code == 201, r.text
        ids["taj-crop"] = r.json()["id"]
    with db.connect() as conn:
        link_pending(conn)
    yield server, ids
    server.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tmp_path_factory.mktemp("chromium-profile")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=412,915"):  # a phone's width
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def wait_for(driver, css: str, timeout: float = 60):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css)))


def box_fractions(driver, figure) -> tuple[float, float, float, float]:
    """Where the drawn box lies over its image, from the rendered pixels."""
    return tuple(driver.execute_script("""
        const box = arguments[0].querySelector('.box'), img = arguments[0].querySelector('img');
        const f = img.getBoundingClientRect(), b = box.getBoundingClientRect();
        return [(b.left - f.left) / f.width, (b.top - f.top) / f.height,
                (b.right - f.left) / f.width, (b.bottom - f.top) / f.height];""", figure))


def test_upload_shows_the_match_with_its_box_on_both_images(site, browser, tmp_path):
    from selenium.webdriver.common.by import By

    server, ids = site
    source = Image.open(POOL / STORED[0]).convert("RGB")
    w, h = source.size
    crop = tmp_path / "crop.jpg"
    source.crop((int(CROP[0] * w), int(CROP[1] * h), int(CROP[2] * w), int(CROP[3] * h))).save(crop, quality=90)

    browser.get(server.url + "/")
    assert "imgsearch" in browser.title
    browser.find_element(By.ID, "file-input").send_keys(str(crop))
    card = wait_for(browser, "#results .card")
    assert card.get_attribute("data-id") == str(ids[STORED[0]])
    assert card.get_attribute("data-relation") == "crop"
    query_figure, match_figure = card.find_elements(By.CSS_SELECTOR, "figure.boxed")
    wait_for(browser, "#results .card figure.boxed img")
    browser.execute_script("return Promise.all([...document.images].map(i => i.decode().catch(() => null)))")
    assert box_fractions(browser, match_figure) == pytest.approx(CROP, abs=0.05)  # where the crop lies in the source
    assert box_fractions(browser, query_figure) == pytest.approx((0, 0, 1, 1), abs=0.05)  # the whole query
    assert int(card.find_element(By.CSS_SELECTOR, ".score").text) > 0
    assert "example.org" in card.find_element(By.CSS_SELECTOR, ".uri").text
    # the page fits a phone's width: nothing wider than the window
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")


def test_random_image_and_the_page_of_an_image(site, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    server, ids = site
    browser.get(server.url + "/")
    browser.find_element(By.ID, "random-btn").click()
    wait_for(browser, "#query:not([hidden]) #query-img")
    assert "stored image #" in browser.find_element(By.ID, "query-info").text
    assert "image=" in browser.current_url

    image_id = ids[STORED[1]]
    browser.get(f"{server.url}/images/{image_id}")
    wait_for(browser, "#detail-table tr")
    assert browser.find_element(By.ID, "detail-title").text == f"Image #{image_id}"
    assert f"https://example.org/{STORED[1]}" in browser.find_element(By.ID, "detail-uris").text
    assert browser.find_element(By.ID, "search-view").get_attribute("hidden") is not None
    # the matches arrive after the details (and alongside the lineage): wait for them
    WebDriverWait(browser, 60).until(lambda d: "match" in d.find_element(By.ID, "status").text.lower())
    assert "No match" in browser.find_element(By.ID, "status").text or browser.find_elements(By.CSS_SELECTOR,
                                                                                              "#results .card")


def test_a_bad_file_shows_the_error(site, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    server, _ = site
    bad = tmp_path / "notes.jpg"
    bad.write_bytes(b"this is text, not a JPEG")
    browser.get(server.url + "/")
    browser.find_element(By.ID, "file-input").send_keys(str(bad))
    WebDriverWait(browser, 30).until(lambda d: "error" in d.find_element(By.ID, "status").get_attribute("class"))
    assert "text, not an image" in browser.find_element(By.ID, "status").text


def test_the_page_of_an_image_shows_its_lineage(site, browser):
    from selenium.webdriver.common.by import By

    server, ids = site
    crop_id, taj_id = ids["taj-crop"], ids[STORED[2]]
    browser.get(f"{server.url}/images/{crop_id}")
    parent = wait_for(browser, f'#lineage-ancestors .lnode[data-id="{taj_id}"]')
    assert parent.get_attribute("data-relation") == "crop" and int(parent.get_attribute("data-score")) > 0
    card = parent.find_element(By.CSS_SELECTOR, ".lcard")
    assert card.get_attribute("href").endswith(f"/images/{taj_id}")
    assert card.find_element(By.CSS_SELECTOR, "img").get_attribute("src").endswith(f"/api/images/{taj_id}/thumbnail")
    assert "crop" in card.text and "example.org" in card.text
    browser.execute_script("return Promise.all([...document.images].map(i => i.decode().catch(() => null)))")
    figure = card.find_element(By.CSS_SELECTOR, "figure")
    assert box_fractions(browser, figure) == pytest.approx((0.2, 0.1, 0.8, 0.9), abs=0.05)  # where the crop was cut
    # the parent above the image itself, nothing made from the crop below it
    this = browser.find_element(By.CSS_SELECTOR, "#lineage .lself")
    assert parent.location["y"] < this.location["y"]
    assert "Nothing stored" in browser.find_element(By.ID, "lineage-descendants").text
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")

    # and on the source's page, the crop hangs below it
    browser.get(f"{server.url}/images/{taj_id}")
    child = wait_for(browser, f'#lineage-descendants .lnode[data-id="{crop_id}"]')
    assert child.get_attribute("data-relation") == "crop"
    assert child.location["y"] > browser.find_element(By.CSS_SELECTOR, "#lineage .lself").location["y"]


def test_the_similar_view_random_image_and_upload(site, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    server, ids = site
    browser.get(server.url + "/similar")
    assert "similar" in browser.title
    assert "current" in browser.find_element(By.ID, "nav-similar").get_attribute("class")
    assert not browser.find_elements(By.ID, "similar-unavailable")  # the extra is installed (the README's tests)
    browser.find_element(By.ID, "random-btn").click()
    card = wait_for(browser, "#results .similar-card")
    assert "/similar?image=" in browser.current_url
    picked = int(browser.current_url.rsplit("=", 1)[1])
    shown = [int(c.get_attribute("data-id")) for c in browser.find_elements(By.CSS_SELECTOR, "#results .similar-card")]
    assert picked not in shown and set(shown) <= set(ids.values())
    assert -1 <= float(card.get_attribute("data-similarity")) <= 1
    assert card.find_element(By.CSS_SELECTOR, "a[href^='/similar?image=']")

    # an upload of the cat (a smaller copy): the stored cat comes first, nearly the same vector
    small = tmp_path / "cat.jpg"
    Image.open(POOL / STORED[1]).convert("RGB").resize((300, 200)).save(small, quality=85)
    browser.get(server.url + "/similar")
    browser.find_element(By.ID, "file-input").send_keys(str(small))
    WebDriverWait(browser, 60).until(lambda d: "similar image" in d.find_element(By.ID, "status").text)
    first = browser.find_element(By.CSS_SELECTOR, "#results .similar-card")
    assert first.get_attribute("data-id") == str(ids[STORED[1]]) and float(first.get_attribute("data-similarity")) > 0.8
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")

    # the page of an image links to its similar images
    browser.get(f"{server.url}/images/{ids[STORED[0]]}")
    wait_for(browser, "#detail-table tr")
    assert browser.find_element(By.ID, "detail-similar").get_attribute("href").endswith(
        f"/similar?image={ids[STORED[0]]}")


def test_the_similar_view_says_how_to_enable_the_extra(site, browser, monkeypatch):
    from selenium.webdriver.support.ui import WebDriverWait

    from engine import embedding

    server, _ = site
    monkeypatch.setattr(embedding, "missing", lambda: "torch is not installed")
    browser.get(server.url + "/similar")
    note = wait_for(browser, "#similar-unavailable")
    assert "imgsearch embed --install" in note.text
    browser.find_element("id", "random-btn").click()  # and a query says it too, as an error
    WebDriverWait(browser, 30).until(lambda d: "error" in d.find_element("id", "status").get_attribute("class"))
    assert "semantic" in browser.find_element("id", "status").text
