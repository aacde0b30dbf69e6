"""Open the seed browser in a real JupyterLab in a headless browser, click it, and screenshot it.

    pip install playwright                 # the Python driver only; the browser is the system's chromium
    apt-get install chromium               # (Debian) or pass --chromium /path/to/chrome
    python scripts/lab_screenshot.py --run mini --out reports/seed_browser.png

Starts `jupyter lab` on loopback with a one-time token, opens notebooks/seed_browser.ipynb, runs all cells,
waits for the widgets, picks the last category in the category dropdown, types the category's object word
into "attend to" (so the images are remade with attention overlays), and saves a screenshot. Then it drives
what a person does next and asserts what the page shows: a word that is not in the prompt is named on the
page within 5 s; with every seed deselected no image is left and the page says why; with `--other RUN`, a
switch to another run shows that run's per-seed accuracies. Exits nonzero, naming the step, if any of that
does not happen within the time limits. Needs a finished run (`make run`).
"""
from __future__ import annotations

import argparse
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"JupyterLab did not answer at {url.split('?')[0]} within {timeout:.0f} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="mini", help="run directory name under runs/")
    ap.add_argument("--out", default="reports/seed_browser.png")
    ap.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser") or "")
    ap.add_argument("--timeout", type=float, default=180.0)
    ap.add_argument("--other", help="a second run under runs/ to switch to (checks that a switch reloads)")
    args = ap.parse_args(argv)
    if not (REPO / "runs" / args.run / "ledger.sqlite").is_file():
        raise SystemExit(f"no run runs/{args.run}: run `make run` first")
    if not args.chromium or not Path(args.chromium).is_file():
        raise SystemExit("no chromium found: install it (apt-get install chromium) or pass --chromium PATH")
    from playwright.sync_api import sync_playwright

    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_TOKEN": token}  # the token never appears on a command line
    lab = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
                            f"--ServerApp.root_dir={REPO}", "--LabApp.expose_app_in_browser=True"]
                           + (["--allow-root"] if os.geteuid() == 0 else []),  # containers often run as root
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{base}/api/status?token={token}", 60)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(args.timeout * 1000)
            step = "start"

            def at(name: str) -> None:
                nonlocal step
                step = name
                print(f"... {name}", flush=True)

            try:
                _drive(page, base, token, at, args, REPO / args.out)
            except Exception as e:
                failed = REPO / args.out
                failed = failed.with_name(failed.stem + "_failed.png")
                page.screenshot(path=str(failed))
                raise SystemExit(f"the seed browser check failed at step {step!r} ({type(e).__name__}: "
                                 f"{str(e).splitlines()[0]}); the page at that moment: {failed}") from None
            browser.close()
        return 0
    finally:
        lab.terminate()
        try:
            lab.wait(20)
        except subprocess.TimeoutExpired:
            lab.kill()


def _drive(page, base: str, token: str, at, args, out: Path) -> None:
    """Open, run, click, type, screenshot; each step named through `at` first."""
    at("open the notebook")
    page.goto(f"{base}/lab/tree/notebooks/seed_browser.ipynb?token={token}")
    page.wait_for_selector(".jp-Notebook", state="visible")
    at("wait for the JupyterLab app")
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.commands.hasCommand("
                           "'notebook:run-all-cells')")
    at("choose the kernel")
    select = page.locator(".jp-Dialog button.jp-mod-accept")
    try:
        select.wait_for(state="visible", timeout=15000)
        select.click()  # "Select Kernel" -> Python 3
    except Exception:
        pass  # no dialog: the kernel started by itself
    news = page.locator(".jp-Notification-Toast-Close, .jp-toast-button:has-text('No')")
    if news.count():
        news.first.click()
    at("wait for the kernel")
    page.wait_for_selector("text=Python 3 (ipykernel) | Idle", timeout=120000)
    at("run all cells")
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); return true; }")
    at("wait for the widgets")
    page.wait_for_selector(".widget-dropdown select", state="visible")
    run_select = page.locator(".widget-dropdown select").nth(0)
    if run_select.input_value() != args.run:
        at(f"choose the run {args.run!r}")
        run_select.select_option(label=args.run)
        _idle(page)
    at("wait for the image grid")
    page.wait_for_selector(".jp-OutputArea-output img", state="visible")
    selects = page.locator(".widget-dropdown select")
    category = selects.nth(2)
    pick = category.locator("option").all_inner_texts()[-1]
    at(f"pick category {pick!r}")
    category.select_option(label=pick)  # what a click on the dropdown does
    page.wait_for_timeout(2000)
    prompts = selects.nth(3).locator("option").all_inner_texts()
    stop = {"a", "an", "the", "on", "of", "left", "right", "top", "under", "in", "at"}
    word = next((w for w in (prompts[1] if len(prompts) > 1 else "").replace(",", " ").split()
                 if w not in stop and not w.isdigit()), "")
    if word:
        at(f"type {word!r} into 'attend to'")
        box = page.locator(".widget-text input").first
        box.fill(word)
        box.press("Enter")
        page.wait_for_timeout(1000)
        page.wait_for_selector("text=Python 3 (ipykernel) | Idle", timeout=120000)  # images remade with attention
        page.wait_for_timeout(1000)
    out.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out), full_page=False)
    print(f"screenshot of the seed browser (category {pick!r}, attention to {word!r}) written to {out}")
    _interactions(page, at, args, out)


def _idle(page) -> None:
    page.wait_for_timeout(500)
    page.wait_for_selector("text=Python 3 (ipykernel) | Idle", timeout=120000)
    page.wait_for_timeout(500)


def _grid_images(page) -> int:
    """Images in the browser widget's output area (not the notebook's other outputs)."""
    return page.locator(".widget-vbox .widget-output img").count()


def _interactions(page, at, args, out: Path) -> None:
    """Drive what a person does next and assert what the page shows: a word not in the prompt is named on
    the page at once; deselecting every seed leaves no stale image; switching runs shows the other run."""
    box = page.locator(".widget-text input").first
    at("type 'zebra' into 'attend to': the page names it")
    box.fill("zebra")
    box.press("Enter")
    page.wait_for_selector("text='zebra' is not a word of", timeout=5000)  # before any model would load
    if _grid_images(page) != 1:
        raise RuntimeError(f"expected the image grid beside the message, found {_grid_images(page)} images")
    box.fill("")
    box.press("Enter")
    _idle(page)
    at("deselect every seed: no stale images, the page says why")
    seeds = page.locator(".widget-select-multiple select").first
    seeds.evaluate("s => { for (const o of s.options) o.selected = false; "
                   "s.dispatchEvent(new Event('change', {bubbles: true})); }")
    page.wait_for_selector("text=no seed chosen", timeout=10000)
    _idle(page)
    if _grid_images(page):
        raise RuntimeError(f"{_grid_images(page)} images still shown with no seed chosen")
    page.screenshot(path=str(out.with_name(out.stem + "_no_seeds.png")))
    if args.other:
        at(f"switch the run to {args.other!r}, the arm staying 'base'")
        from compseed_lib.analysis.browser import SeedBrowser

        expected = SeedBrowser(REPO / "runs", run=args.other)  # what the page must show after the switch
        want = [f"{a:.2f}" for a in expected.table["accuracy"]]
        page.locator(".widget-dropdown select").nth(0).select_option(label=args.other)
        _idle(page)
        shown = page.locator(".widget-vbox .widget-html table").first.inner_text()
        rows = [line.split("\t") for line in shown.strip().splitlines()[1:]]
        got = [r[3].strip() for r in rows if len(r) > 3]
        if got != want:
            raise RuntimeError(f"after the switch the table shows accuracies {got[:8]}, the run {args.other!r} "
                               f"has {want[:8]}")
        if _grid_images(page) != 1:
            raise RuntimeError("no image grid after the run switch")
        page.screenshot(path=str(out.with_name(out.stem + "_switched.png")))
    print("interactions checked: message shown, no stale images" + (", run switch reloads" if args.other else ""))


if __name__ == "__main__":
    raise SystemExit(main())
