"""The status page in a real browser: headless Chromium (Debian's chromium and chromium-driver, which
scripts/test installs) driven by selenium, against a daemon serving the page on loopback, its
targets real loopback ports, some refusing."""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import textwrap
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By

from monitor.config import parse_config
from monitor.statuspage import REFRESH_SCRIPT
from tests.test_status_page import TOKEN, HistoryDaemon, call, firing, tcp_check, until

LABEL = '<script>window.pwned="label"</script>'
REASON = '<script>window.pwned="reason"</script><img src=x onerror="window.pwned=1">'
GROUPS = {
    "data": {"database", "cache"},
    "web": {"web-api", "web-front", "web-admin"},
    LABEL: {"nightly-backup"},
    "other": {"batch"},
}


class _Loop:
    """An event loop in a thread of its own: selenium blocks, the daemon must go on serving."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="daemon-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout_s: float = 30) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout_s)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture(scope="module")
def page_url() -> Iterator[str]:
    with socket.socket() as listening, socket.socket() as closed:
        listening.bind(("127.0.0.1", 0))
        listening.listen(64)
        closed.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        up, refused = listening.getsockname()[1], closed.getsockname()[1]
        toml = (
            f'[monitor]\nlisten = "127.0.0.1:0"\nstate = "memory"\napi_token = "{TOKEN}"\n'
            + tcp_check("database", refused, '{ team = "data" }')
            + tcp_check("cache", up, '{ team = "data" }')
            + tcp_check("web-api", up, '{ team = "web" }')
            + tcp_check("web-front", refused, '{ team = "web" }')
            + tcp_check("web-admin", up, '{ team = "web" }')
            + tcp_check("batch", up)
            + textwrap.dedent(
                f"""\
                [[checks]]
                name = "nightly-backup"
                type = "heartbeat"
                period = "1d"
                interval = "0.2s"
                timeout = "0.1s"
                token = "{TOKEN}"
                labels = {{ team = '{LABEL}' }}
                """
            )
        )
        loop = _Loop()

        async def start() -> HistoryDaemon:
            daemon = HistoryDaemon(parse_config(toml, {}), registry=CollectorRegistry())
            daemon.history = frozenset({"cache", "web-api", "database"})
            await daemon.start()
            fail = "/api/v1/heartbeats/nightly-backup/fail"
            assert (await call(daemon, "POST", fail, data=REASON.encode()))[0] == 200
            await until(daemon, "/api/v1/alerts", firing("database", "web-front", "nightly-backup"))
            return daemon

        daemon = loop.run(start())
        try:
            yield f"http://127.0.0.1:{daemon.bound_port}/"
        finally:
            loop.run(daemon.stop())
            loop.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.add_argument("--window-size=1400,1000")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def page(browser: WebDriver, page_url: str) -> WebDriver:
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    browser.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": False})
    browser.get_log("browser")  # what earlier tests logged
    browser.get(page_url)
    return browser


def shown_groups(driver: WebDriver) -> dict[str, set[str]]:
    """Each group heading's name with the names of the checks shown under it."""
    return driver.execute_script(  # type: ignore[no-any-return]
        """
        const found = {};
        for (const section of document.querySelectorAll('section.card')) {
          const heading = section.querySelector('h2');
          if (!heading.querySelector('.dot')) continue;
          const name = heading.childNodes[1].textContent.trim();
          found[name] = [...section.querySelectorAll('div.name')].map(e => e.textContent);
        }
        return found;
        """
    )


def test_no_console_errors_and_every_check_shown_in_its_group(page: WebDriver) -> None:
    errors = [e for e in page.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert errors == []
    assert {name: set(checks) for name, checks in shown_groups(page).items()} == GROUPS
    names = page.find_elements(By.CSS_SELECTOR, "section.card div.name")
    assert len(names) == 7 and all(n.is_displayed() for n in names)
    pills = {
        row.find_element(By.CSS_SELECTOR, "div.name").text: row.find_element(By.CSS_SELECTOR, ".pill").text
        for row in page.find_elements(By.CSS_SELECTOR, "tr[class^='b-']")
    }
    assert pills["database"] == pills["web-front"] == "CRITICAL"  # upper-cased by the style
    assert pills["cache"] == "OK"


def test_a_script_in_a_reason_or_a_label_creates_no_element(page: WebDriver) -> None:
    scripts = page.execute_script("return [...document.querySelectorAll('script')].map(s => s.textContent)")
    assert scripts == [REFRESH_SCRIPT]
    assert page.execute_script("return document.querySelectorAll('img').length") == 0
    assert page.execute_script("return typeof window.pwned") == "undefined"
    reasons = [e.text for e in page.find_elements(By.CSS_SELECTOR, "div.reason")]
    assert f"failure reported: {REASON}" in reasons
    assert LABEL in shown_groups(page)


def _rgb(colour: str) -> tuple[int, ...]:
    return tuple(int(v) for v in re.findall(r"\d+", colour)[:3])


def test_dark_mode_changes_the_background(page: WebDriver) -> None:
    background = "return getComputedStyle(document.body).backgroundColor"
    light = _rgb(page.execute_script(background))
    page.execute_cdp_cmd(
        "Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "dark"}]}
    )
    assert page.execute_script("return matchMedia('(prefers-color-scheme: dark)').matches") is True
    dark = _rgb(page.execute_script(background))
    assert min(light) > 200 and max(dark) < 50, (light, dark)
    card = "return getComputedStyle(document.querySelector('section.card')).color"
    assert min(_rgb(page.execute_script(card))) > 200  # light text on the dark background


def test_relative_times_show_the_exact_time_on_hover(page: WebDriver) -> None:
    times = page.find_elements(By.TAG_NAME, "time")
    assert len(times) >= 8
    for element in times:
        assert re.fullmatch(r"just now|(in )?\d+ (s|min|h|d)( ago)?", element.text), element.text
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", element.get_attribute("title") or "")
    last_run = page.find_element(By.CSS_SELECTOR, "tr[class^='b-'] td.when time")
    ActionChains(page).move_to_element(last_run).perform()
    hovered = page.execute_script("return document.querySelector('time:hover')")
    assert hovered == last_run
    assert page.execute_script("return getComputedStyle(arguments[0]).cursor", last_run) == "help"


def test_the_page_works_without_javascript(page: WebDriver) -> None:
    page.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": True})
    page.refresh()
    names = page.find_elements(By.CSS_SELECTOR, "section.card div.name")
    assert sorted(n.text for n in names) == sorted(c for checks in GROUPS.values() for c in checks)
    assert all(n.is_displayed() for n in names)
