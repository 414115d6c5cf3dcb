"""The dashboard in a real browser: Debian's headless chromium driven through its chromedriver by Selenium.

Each test starts `stateservice serve` as a subprocess (the dashboard is set up as in production) and
opens its pages. The tests fail, never skip, without chromium: `.ci/run` installs it
(`apt-get install chromium chromium-driver`). They write the screenshots docs/dashboard.md shows
(docs/img/dashboard-*.png), so the docs always show the pages as they are.
"""

from __future__ import annotations

import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from stateservice.security.tokens import hash_secret
from tests.support.charts import chart, final, increment, review, timed
from tests.support.service import REPO, ServiceProcess, Services, http

IMAGES = REPO / "docs" / "img"
ADMIN, READER = "sst_browser-admin", "sst_browser-reader"
TOKENS = f"""tokens:
  - {{name: alice, sha256: {hash_secret(ADMIN)}, scopes: [read, report, admin]}}
  - {{name: bob, sha256: {hash_secret(READER)}, scopes: [read]}}
"""
CANARY = chart(
    "payments",
    "canary",
    "  - name: canary\n    func: increment\n    current: {key: hosts, value: 0}\n"
    "    target: {name: soak, when: {key: hosts, value: 3}}\n    concurrency: 2\n    max_failures: 2\n",
    timed("soak", "fleet", "elapsed", "30m"),
    increment("fleet", "done", 40),
    final("done"),
)
GATE = chart(
    "release",
    "canary",
    increment("canary", "review", 1),
    review("4h"),
    increment("fleet", "done", 20),
    final("done"),
    final("rolled_back"),
)
LIVE_WITHIN = 1.0  # seconds: the bar for a change to show on an open page
SWAPPED = (StaleElementReferenceException,)  # the live part of the page is replaced while a wait reads it


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is needed for the browser tests: apt-get install chromium chromium-driver (.ci/run does)")
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = _binary("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1100,900")
    driver = webdriver.Chrome(options=options, service=Service(_binary("chromedriver")))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def browse(browser: WebDriver) -> Iterator[WebDriver]:
    """The browser, signed out and at its desktop size again after the test."""
    yield browser
    browser.delete_all_cookies()
    browser.set_window_size(1100, 900)


def _serve(services: Services, tmp_path: Path, redis_url: str, *, tokens: bool = False) -> ServiceProcess:
    (tmp_path / "payments.yaml").write_text(CANARY)
    (tmp_path / "release.yaml").write_text(GATE)
    charts = [tmp_path / "payments.yaml", tmp_path / "release.yaml", REPO / "examples" / "rollout.yaml"]
    charts.append(REPO / "examples" / "states.yaml")
    args = ["--max-wait", "5"]
    if tokens:
        (tmp_path / "tokens.yaml").write_text(TOKENS)
        args += ["--tokens", str(tmp_path / "tokens.yaml")]
    return services.start(*charts, redis_url=redis_url, args=args)


def _put(service: ServiceProcess, query: str, token: str | None = None) -> None:
    if token is None:
        status, _, body = http("PUT", f"{service.url}/{query}")
    else:
        status, body = _authorized("PUT", f"{service.url}/{query}", token)
    assert status == 200, body


def _authorized(method: str, url: str, token: str) -> tuple[int, str]:
    request = urllib.request.Request(url, method=method, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode()


def _live(driver: WebDriver) -> None:
    """Wait until the page's event stream is connected (its status line says so)."""
    WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "live-status").get_attribute("data-live") == "on")


def _sign_in(driver: WebDriver, service: ServiceProcess, token: str) -> None:
    driver.get(f"{service.url}/dashboard/signin")
    field = driver.find_element(By.ID, "token")
    field.send_keys(token)
    field.submit()
    WebDriverWait(driver, 10).until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "table.charts")))


def test_the_overview_renders_every_chart(
    browse: WebDriver, services: Services, tmp_path: Path, redis_url: str
) -> None:
    service = _serve(services, tmp_path, redis_url)
    _put(service, "charts/payments/state?state=canary&host=web-1")
    _put(service, "charts/payments/slots/web-2?state=canary")
    _put(service, "charts/payments/state?state=canary&host=web-3&result=failure&reason=disk%20full")
    _put(service, "charts/states/state?state=green_state&host=a")
    _put(service, "charts/release/state?state=canary&host=web-1")  # now waits for an approval
    browse.get(service.url + "/")
    rows = browse.find_elements(By.CSS_SELECTOR, "tr.chart")
    assert [row.get_attribute("data-chart") for row in rows] == ["payments", "release", "rollout", "states"]
    payments = rows[0].text
    assert "canary" in payments and "1 / 3" in payments and "Running" in payments
    assert "Waiting for approval" in rows[1].text
    _live(browse)
    IMAGES.mkdir(exist_ok=True)
    browse.save_screenshot(str(IMAGES / "dashboard-overview.png"))
    browse.set_window_size(400, 900)  # a phone's width: every chart still readable, as a card
    assert browse.find_element(By.CSS_SELECTOR, 'tr[data-chart="payments"]').is_displayed()
    browse.save_screenshot(str(IMAGES / "dashboard-phone.png"))
    browse.set_window_size(1100, 900)
    browse.get(f"{service.url}/dashboard/charts/release")
    assert "Waiting for approval in review" in browse.find_element(By.ID, "live").text
    browse.save_screenshot(str(IMAGES / "dashboard-approval.png"))


def test_a_report_shows_on_an_open_page_without_a_reload(
    browse: WebDriver, services: Services, tmp_path: Path, redis_url: str
) -> None:
    service = _serve(services, tmp_path, redis_url)
    browse.get(f"{service.url}/dashboard/charts/payments")
    _live(browse)
    browse.execute_script("window.notReloaded = true;")
    counted = browse.find_element(By.ID, "hosts").find_element(By.XPATH, "..")
    assert "web-7" not in counted.text
    _put(service, "charts/payments/state?state=canary&host=web-7")
    WebDriverWait(browse, LIVE_WITHIN, poll_frequency=0.05, ignored_exceptions=SWAPPED).until(
        lambda d: "web-7" in d.find_element(By.ID, "live").text
    )
    assert browse.execute_script("return window.notReloaded === true;")
    _put(service, "charts/payments/slots/web-8?state=canary")
    WebDriverWait(browse, LIVE_WITHIN, poll_frequency=0.05, ignored_exceptions=SWAPPED).until(
        lambda d: "web-8" in d.find_element(By.ID, "live").text
    )
    _put(service, "charts/payments/state?state=canary&host=web-9&result=failure&reason=timeout")
    WebDriverWait(browse, LIVE_WITHIN, poll_frequency=0.05, ignored_exceptions=SWAPPED).until(
        lambda d: "timeout" in d.find_element(By.ID, "live").text
    )
    IMAGES.mkdir(exist_ok=True)
    browse.set_window_size(1100, 1500)
    browse.save_screenshot(str(IMAGES / "dashboard-chart.png"))


def _click_halt(driver: WebDriver, accept: bool) -> None:
    driver.find_element(By.ID, "halt-reason").clear()
    driver.find_element(By.ID, "halt-reason").send_keys("canary errors")
    driver.find_element(By.ID, "halt").click()
    alert = WebDriverWait(driver, 5).until(expected_conditions.alert_is_present())
    assert "Halt payments?" in alert.text
    if accept:
        alert.accept()
    else:
        alert.dismiss()


def test_halting_needs_a_confirmation_and_an_admin_session(
    browse: WebDriver, services: Services, tmp_path: Path, redis_url: str, plain_sync: object
) -> None:
    service = _serve(services, tmp_path, redis_url, tokens=True)
    browse.get(service.url + "/")
    assert browse.find_elements(By.ID, "token"), "tokens on: the pages ask to sign in first"
    _sign_in(browse, service, ADMIN)
    browse.get(f"{service.url}/dashboard/charts/payments")
    assert "Signed in as alice" in browse.find_element(By.CSS_SELECTOR, "header").text
    _click_halt(browse, accept=False)
    time.sleep(0.3)
    with pytest.raises(NoAlertPresentException):
        browse.switch_to.alert.text  # noqa: B018
    assert plain_sync.hget("stateservice:{payments}", "halted") is None  # type: ignore[attr-defined]
    _click_halt(browse, accept=True)
    WebDriverWait(browse, 5, ignored_exceptions=SWAPPED).until(
        lambda d: "Halted" in d.find_element(By.CSS_SELECTOR, '[data-field="status"]').text
    )
    assert "canary errors" in browse.find_element(By.CSS_SELECTOR, '[data-field="halted"]').text
    assert plain_sync.hget("stateservice:{payments}", "halted") == "canary errors"  # type: ignore[attr-defined]
    status, body = _authorized("GET", f"{service.url}/charts/payments/history?limit=1", ADMIN)
    assert status == 200 and '"actor":"alice"' in body.replace(" ", "")


def test_a_read_only_session_sees_no_action_buttons(
    browse: WebDriver, services: Services, tmp_path: Path, redis_url: str
) -> None:
    service = _serve(services, tmp_path, redis_url, tokens=True)
    _put(service, "charts/payments/slots/web-2?state=canary", ADMIN)
    _put(service, "charts/payments/state?state=canary&host=web-1", ADMIN)
    _sign_in(browse, service, READER)
    shown = [row.get_attribute("data-chart") for row in browse.find_elements(By.CSS_SELECTOR, "tr.chart")]
    assert shown == ["payments", "release", "rollout", "states"]
    browse.get(f"{service.url}/dashboard/charts/payments")
    assert "web-1" in browse.find_element(By.ID, "live").text and "web-2" in browse.find_element(By.ID, "live").text
    assert browse.find_elements(By.CSS_SELECTOR, "main form") == []
    assert browse.find_elements(By.CSS_SELECTOR, "main button") == []


def test_following_a_link_from_another_site_keeps_the_session(
    browse: WebDriver, services: Services, tmp_path: Path, redis_url: str
) -> None:
    """The browser sends no SameSite=Strict cookie on a navigation from another site: that page asks to sign in,
    but the session stays for the next visit (its answer's anonymous cookie is another cookie)."""
    service = _serve(services, tmp_path, redis_url, tokens=True)
    _sign_in(browse, service, ADMIN)
    link = f'<a id="link" href="{service.url}/dashboard/charts/payments">payments is halted</a>'
    browse.get("data:text/html," + urllib.parse.quote(link))
    browse.find_element(By.ID, "link").click()
    browse.get(f"{service.url}/dashboard/charts/payments")  # typed into the address bar: same-site
    assert "Signed in as alice" in browse.find_element(By.TAG_NAME, "body").text
