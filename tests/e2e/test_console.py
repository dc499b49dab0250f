"""The web console (``/console``) in a real browser: Debian's ``chromium`` driven by Selenium
through ``chromium-driver`` (no browser download), against one ``tide dev`` for the module.

What a person sees: a wrong key is refused with a message that says what key to use; the admin
key shows every simulated GPU drawn as a bar (the MIG card cut into slices); after a request
the new worker's slice is coloured by its endpoint, and the Endpoints and Workers pages list
it; a viewer key reads the same.  Screenshots go to the test's tmp dir, or to
``$TIDE_CONSOLE_SCREENSHOTS`` when set (see README).  Tests wait (bounded) for what the page
shows, never on timing.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.cluster import DevClusterProcess
from tests.fixtures.coordinator import REPO_ROOT, http_json

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
ECHO = f"dir://{REPO_ROOT / 'examples' / 'echo'}"
GPUS = "1xH100-80GB:mig,1xH100-80GB"  # a MIG-pool card (cut on demand) and a whole card


@pytest.fixture(scope="module")
def dev() -> Iterator[DevClusterProcess]:
    proc = DevClusterProcess(nodes=1, gpus=GPUS)
    try:
        proc.start()
        yield proc
    finally:
        proc.cleanup()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not (CHROMIUM and DRIVER):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    profile = tmp_path_factory.mktemp("chromium-profile")
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        f"--user-data-dir={profile}",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver: Any, what: str, predicate: Any, timeout: float = 45.0) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(lambda d: predicate(d), message=what)


def _css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def _sign_in(driver: Any, url: str, key: str) -> None:
    driver.get(url + "/console")
    driver.execute_script("sessionStorage.clear()")
    driver.refresh()  # a fresh page, signed out
    box = _wait(driver, "the sign-in form", lambda d: _css(d, "#key")[0] if _css(d, "#key") else None)
    box.clear()
    box.send_keys(key)
    _css(driver, "#signin-button")[0].click()


def _shot(driver: Any, tmp_path: Path, name: str) -> Path:
    folder = Path(os.environ.get("TIDE_CONSOLE_SCREENSHOTS", "") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"console-{name}.png"
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return path


def test_a_wrong_key_is_refused_with_what_to_use(dev: DevClusterProcess, browser: Any) -> None:
    _sign_in(browser, dev.url, "adm_not-a-key")
    err = _wait(
        browser, "the sign-in error", lambda d: [e for e in _css(d, "#signin-error") if e.is_displayed()]
    )
    assert "not accepted" in err[0].text and "--scope viewer" in err[0].text
    assert not _css(browser, "#nav")[0].is_displayed()
    assert browser.execute_script("return sessionStorage.length") == 0  # a refused key is not kept


def test_the_cluster_page_draws_every_gpu_and_a_new_workers_slice(
    dev: DevClusterProcess, browser: Any, tmp_path: Path
) -> None:
    _sign_in(browser, dev.url, dev.api_key)
    bars = _wait(browser, "two GPU bars", lambda d: (b := _css(d, ".bar[data-gpu]")) and len(b) == 2 and b)
    assert sorted(b.get_attribute("data-mig") for b in bars) == ["off", "on"]
    assert "api_key" not in browser.current_url and dev.api_key not in browser.current_url
    whole = _css(browser, ".bar[data-mig=off] .slice")
    assert len(whole) == 1 and whole[0].get_attribute("data-state") == "free"

    name = f"ep-{uuid.uuid4().hex[:6]}"
    spec = {
        "name": name,
        "image": ECHO,
        "gpuTypeIds": ["H100-80GB:3g.40gb"],
        "workersMax": 1,
        "idleTimeout": 120,
    }
    ep = dev.admin.call("POST", "/admin/v1/endpoints", spec)["id"]
    code, out = http_json("POST", f"{dev.url}/v2/{ep}/runsync", {"input": {"hi": 1}}, key=dev.api_key)
    assert code == 200 and out["status"] == "COMPLETED", out

    sel = f".bar[data-mig=on] .slice[data-endpoint='{ep}']"
    found = _wait(browser, "the worker's MIG slice", lambda d: _css(d, sel))
    assert found[0].get_attribute("data-state") in ("idle", "running")
    assert "3g.40gb" in found[0].text and name in found[0].text
    _shot(browser, tmp_path, "cluster")

    found[0].click()  # the slice's worker, and its logs tail
    _wait(browser, "the worker detail", lambda d: [e for e in _css(d, "#detail") if e.is_displayed()])
    assert name in _css(browser, "#detail")[0].text

    browser.get(dev.url + "/console#endpoints")
    row = _wait(browser, "the endpoint row", lambda d: _css(d, f"#endpoints-table [data-endpoint='{ep}']"))
    assert name in row[0].text
    _shot(browser, tmp_path, "endpoints")
    browser.get(dev.url + "/console#workers")
    state = _wait(browser, "the worker row", lambda d: _css(d, "#workers-by-endpoint .state[data-worker]"))
    assert state[0].text in ("idle", "running")
    _shot(browser, tmp_path, "workers")


def test_a_viewer_key_reads_the_console(dev: DevClusterProcess, browser: Any) -> None:
    viewer = dev.admin.create_key(f"console-{uuid.uuid4().hex[:6]}", scope="viewer")["key"]
    _sign_in(browser, dev.url, viewer)
    _wait(browser, "two GPU bars", lambda d: len(_css(d, ".bar[data-gpu]")) == 2)
    assert not [e for e in _css(browser, "#error") if e.is_displayed()]


def test_the_files_are_local_and_keyless_and_a_bad_name_is_a_404(dev: DevClusterProcess) -> None:
    code, page = http_json("GET", dev.url + "/console")
    assert (
        code == 200 and '<script src="/console/console.js"' in page and "http" not in page.split("<body>")[0]
    )
    code, out = http_json("GET", dev.url + "/console/..%2Fsecret")
    assert code == 404 and "open /console" in out["error"]
