"""Screenshot of the `hf-binary-bert serve` page for the docs (docs/images/serve.png), taken in headless Chromium.

usage: python examples/serve_screenshot.py TEACHER STUDENT PNG [--sentence TEXT] [--text-out FILE]

Starts the page on a free local port, types the sentence, waits until both models have answered the whole sentence,
saves a screenshot of the page and prints what the page shows (predictions, latencies, sizes) as markdown — the docs
include that printout (--text-out). Needs the serve extra, selenium and Debian's `chromium` + `chromium-driver`.
"""

import argparse
import shutil
import socket
import sys
import time

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By

from hf_binary_bert.serve import ROLES, SideBySide, launch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("teacher")
    parser.add_argument("student")
    parser.add_argument("png")
    parser.add_argument("--sentence", default="A gripping, beautifully acted film that never lets go.")
    parser.add_argument("--text-out", help="also write the printout to this file")
    args = parser.parse_args()

    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        sys.exit("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    side = SideBySide(args.teacher, args.student)
    app = launch(side, port=port, block=False)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,900",
                "--hide-scrollbars", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=chromedriver))
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        box = _wait(lambda: driver.find_element(By.CSS_SELECTOR, "#text textarea"))
        box.send_keys(args.sentence)
        want = side.predict(args.sentence)
        for role in ROLES:
            _wait(lambda role=role: _value(driver, f"{role}-prediction") == want[role]["prediction"])
        time.sleep(1.0)  # let the label bars finish their transition
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",  # the whole page in the viewport
                               {"width": 1200, "height": height, "deviceScaleFactor": 1, "mobile": False})
        time.sleep(0.5)
        driver.save_screenshot(args.png)
        # what the page shows, as markdown: read back from the browser, and the size table the page renders
        lines = [f"Sentence: *{args.sentence}*", "", "| | prediction (probability) | latency of the request |",
                 "|---|---|---:|"]
        for role in ROLES:
            lines.append(f"| {role} | {_value(driver, f'{role}-prediction')} | {_value(driver, f'{role}-latency')} |")
        lines += ["", side.size_table()]
        text = "\n".join(lines)
        print(text)
        if args.text_out:
            with open(args.text_out, "w") as f:
                f.write(text + "\n")
    finally:
        driver.quit()
        app.close()
    return 0


def _value(driver, elem_id):
    return driver.find_element(By.CSS_SELECTOR, f"#{elem_id} textarea, #{elem_id} input").get_attribute("value")


def _wait(get, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = get()
            if value:
                return value
        except WebDriverException:  # elements are re-rendered while we read them
            pass
        time.sleep(0.2)
    raise TimeoutError("the page did not show the expected output")


if __name__ == "__main__":
    sys.exit(main())
