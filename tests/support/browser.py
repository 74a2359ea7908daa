"""A real browser and a real server for the web tests: Debian's headless Chromium driven by
Selenium through the system chromedriver, and the app under test started as its own process on a
free port of 127.0.0.1.

Without /usr/bin/chromedriver (`make test` installs chromium and chromium-driver when it runs as
root) the browser tests skip with the command that installs them.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from support.helpers import REPO

CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = REPO / "test-artifacts"
# Chromium's own calls home (updates, sync, field trials) are refused on a closed network and
# can stall its start; these switch them off. A fresh profile per browser keeps runs apart.
CHROME_ARGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--window-size=1280,1300")


def require_browser() -> None:
    if not CHROMEDRIVER.exists():
        pytest.skip(f"no {CHROMEDRIVER}: install Debian's browser with `apt-get install chromium chromium-driver` "
                    "(make test does it when run as root)")


@contextlib.contextmanager
def chrome():
    """A headless Chromium, closed afterwards."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    require_browser()
    options = webdriver.ChromeOptions()
    for arg in CHROME_ARGS:
        options.add_argument(arg)
    with tempfile.TemporaryDirectory(prefix="tinyclf-chrome-") as profile:
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        try:
            yield driver
        finally:
            driver.quit()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def serving(cmd: list[str], url: str, log: Path, *, cwd=None, env=None, timeout: float = 90):
    """Run the server `cmd` until `url` answers; stop it afterwards. Its output goes to `log`,
    shown when it does not come up."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while not _answers(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{' '.join(map(str, cmd))} did not serve {url} "
                                     f"(exit {proc.poll()}):\n{log.read_text()}")
            time.sleep(0.25)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def server_env(tmp: Path) -> dict:
    """The environment of a served app: one thread (the 2 cores are shared), its uploads in `tmp`."""
    env = dict(os.environ, OMP_NUM_THREADS="1", GRADIO_TEMP_DIR=str(tmp / "gradio"), GRADIO_ANALYTICS_ENABLED="False")
    env.pop("GRADIO_SERVER_PORT", None)
    return env


def wait_for(condition, timeout: float = 30, every: float = 0.2):
    """condition()'s first truthy value within `timeout` seconds, else its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)


# ------------------------------------------------------------------------------ the page
def upload(driver, path: Path) -> None:
    from selenium.webdriver.common.by import By

    field = wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#image input[type=file]"))
    assert field, "the page has no file input in #image"
    field[0].send_keys(str(path))


def top5(driver) -> list[tuple[str, str, float]]:
    """(class id, name, probability) of each row the page shows, best first; [] while there are none."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        return [(row.get_attribute("data-class-id"), row.find_element(By.CSS_SELECTOR, ".tc-name").text,
                 float(row.get_attribute("data-probability")))
                for row in driver.find_elements(By.CSS_SELECTOR, "#top5 .tc-row")]
    except StaleElementReferenceException:  # the rows were replaced while being read
        return []


def expected_rows(top: list[tuple[dict, float]]) -> list[tuple[str, str, float]]:
    return [(c["id"], c["name"], p) for c, p in top]


def wait_for_top5(driver, expected: list[tuple[str, str, float]], timeout: float = 30) -> list:
    """The page's rows once their classes are `expected`'s (or what it shows after `timeout`)."""
    want = [(i, n) for i, n, _ in expected]
    wait_for(lambda: [(i, n) for i, n, _ in top5(driver)] == want, timeout)
    return top5(driver)


def assert_same_top5(shown: list, expected: list) -> None:
    assert [(i, n) for i, n, _ in shown] == [(i, n) for i, n, _ in expected], f"page {shown} != expected {expected}"
    for (_, name, p_shown), (_, _, p_expected) in zip(shown, expected):
        assert p_shown == pytest.approx(p_expected, abs=2e-6), name


def screenshot(driver, name: str) -> Path:
    """Save the page as test-artifacts/<name>.png and say where."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return path
