"""Driving the app in a real browser: Debian's headless Chromium through Playwright.

Used by tests/test_app_browser.py, and on its own to make the README's screenshot from the demo model:

    python -m tests.support.app_browser --model outputs/demo --examples data/bps/test --out docs/app.png
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from .env import use_offline_environment
from .launch import free_port
from .paths import REPO

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def find_chromium() -> str | None:
    """Debian's chromium (`apt-get install chromium`; .ci/run installs it when missing)."""
    for candidate in (os.environ.get("CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium",
                      shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


@contextmanager
def serve_app(model: str | Path, examples: str | Path | None = None, tmp_dir: Path | None = None, timeout=180):
    """`scripts/app.py` in a subprocess on 127.0.0.1 and a free port; yields the URL, stops it afterwards.

    `tmp_dir` becomes the subprocess's TMPDIR, so the app's temporary folder (uploads, results) is inside it.
    """
    port = free_port()
    env = use_offline_environment(dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", OMP_NUM_THREADS="1",
                                       PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])))
    if tmp_dir is not None:
        Path(tmp_dir).mkdir(parents=True, exist_ok=True)
        env["TMPDIR"] = str(tmp_dir)
    command = [sys.executable, str(REPO / "scripts" / "app.py"), "--model", str(model), "--port", str(port)]
    if examples:
        command += ["--examples", str(examples)]
    log = open(Path(tmp_dir or ".") / "app_server.log", "w") if tmp_dir else subprocess.DEVNULL
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"scripts/app.py exited with {process.returncode} before serving")
            try:
                urllib.request.urlopen(url, timeout=2).read(100)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the app did not answer on {url} within {timeout} s") from None
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        if log is not subprocess.DEVNULL:
            log.close()


def launch_browser(playwright, executable: str):
    return playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)


def open_app(page, url: str, timeout_ms: int = 120_000) -> None:
    """Load the page and wait until the upload box is there (a busy CI machine gets generous timeouts)."""
    page.set_default_timeout(timeout_ms)
    page.goto(url, wait_until="domcontentloaded", timeout=timeout_ms)
    page.locator("#files input[type=file]").wait_for(state="attached", timeout=timeout_ms)


def upload_and_wait(page, paths: list[str | Path], expect: str, timeout_ms: int = 90_000) -> str:
    """Upload files through the page's file input and wait until the status line shows `expect`."""
    page.locator("#files input[type=file]").set_input_files([str(p) for p in paths])
    status = page.locator("#status")
    status.filter(has_text=expect).wait_for(timeout=timeout_ms)
    return status.inner_text()


def clear_upload(page) -> None:
    """Empty the file input (the upload box's clear button), so the next upload replaces it."""
    button = page.locator("#files button[aria-label='Clear']")
    if button.count():
        button.first.click()


def read_results_csv(page) -> list[dict[str, str]]:
    """The predictions.csv the page offers, downloaded through the page's own link."""
    link = page.locator("#csv a[href]").first
    link.wait_for(timeout=30_000)
    body = page.request.get(link.get_attribute("href")).text()
    return list(csv.DictReader(io.StringIO(body)))


def images_rendered(page, elem_id: str) -> bool:
    """Whether the component's <img> has loaded real pixels (not just a placeholder)."""
    image = page.locator(f"#{elem_id} img").first
    image.wait_for(timeout=30_000)
    return bool(image.evaluate("img => img.complete && img.naturalWidth > 16 && img.naturalHeight > 16"))


def save_screenshot(page, path: str | Path) -> Path:
    """A full-page PNG of the app as the user sees it (the README's docs/app.png is made with this)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Screenshot the app serving a model, with SHAP on.")
    parser.add_argument("--model", required=True)
    parser.add_argument("--examples", required=True, help="folder with Fe/ and X-ray/ TIFFs (data/bps/test)")
    parser.add_argument("--out", default="docs/app.png")
    args = parser.parse_args(argv)
    chromium = find_chromium()
    if chromium is None:
        print("error: chromium not found; apt-get install -y chromium", file=sys.stderr)
        return 1
    from playwright.sync_api import sync_playwright

    image = sorted(Path(args.examples, "Fe").glob("*.tif"))[0]
    with serve_app(args.model, args.examples) as url, sync_playwright() as playwright:
        browser = launch_browser(playwright, chromium)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        open_app(page, url)
        page.locator("#shap input[type=checkbox]").check()
        upload_and_wait(page, [image], f"Explained: {image.name}")
        images_rendered(page, "img-shap")
        print(save_screenshot(page, args.out))
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
