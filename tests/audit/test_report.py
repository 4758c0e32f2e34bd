"""The HTML audit report: opened in a real browser (Debian's chromium, driven by Playwright),
re-rendered byte for byte without the model, hostile names shown as text, within its size budget.

These tests never skip: `.ci/run` installs chromium when it is missing, and a machine without it
fails here with a message saying so.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from audit.cli import app
from audit.report.html import RENDERED_MARK, render_report

BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--disable-quic"]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("no chromium on PATH: install Debian's `chromium` package (.ci/run does)")


def _strip_rendered(html: str) -> str:
    a, b = (re.escape(m) for m in RENDERED_MARK)
    return re.sub(f"{a}.*?{b}", "", html, flags=re.DOTALL)


def _open(path: Path, *, javascript: bool = True, media: str = "screen"):
    """Open the page in headless chromium; returns (browser context objects, page, console, requests, dialogs)."""
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    browser = pw.chromium.launch(executable_path=_chromium(), args=BROWSER_ARGS)
    ctx = browser.new_context(viewport={"width": 1280, "height": 800}, java_script_enabled=javascript)
    page = ctx.new_page()
    console, requests, dialogs = [], [], []
    page.on("console", lambda m: console.append((m.type, m.text)))
    page.on("pageerror", lambda e: console.append(("error", str(e))))
    page.on("request", lambda r: requests.append(r.url))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.emulate_media(media=media)
    page.goto(path.resolve().as_uri(), wait_until="load")
    return pw, browser, page, console, requests, dialogs


@pytest.mark.timeout(1200)  # the shared small demo may be built here
def test_demo_report_in_a_real_browser(small_demo, tmp_path):
    report = small_demo.files["report"]
    assert report.stat().st_size <= 10_000_000, report.stat().st_size  # the size budget
    pw, browser, page, console, requests, _dialogs = _open(report)
    try:
        assert [c for c in console if c[0] == "error"] == []
        # zero network requests: the only URL the page loads is itself (figures are data: URIs)
        assert requests == [report.resolve().as_uri()], requests
        sizes = page.eval_on_selector_all("figure img", "els => els.map(e => [e.naturalWidth, e.naturalHeight, "
                                          "e.getBoundingClientRect().width, e.getBoundingClientRect().height])")
        assert len(sizes) >= 10 and all(min(s) > 0 for s in sizes), sizes
        # the findings come first: their heading and the first finding are on the first screen at 1280×800
        for sel in ("#findings h2", "#findings .finding, #findings p"):
            box = page.locator(sel).first.bounding_box()
            assert box is not None and box["y"] + box["height"] <= 800, (sel, box)
        assert page.locator("#findings").first.is_visible()
        # the flagged shortcut is stated on the page, with its adjusted p from findings.json
        found = json.loads((report.parent / "findings.json").read_text())
        text = page.inner_text("body")
        for f in found["findings"]:
            assert f["sentence"] in text
        # every section of the report is there, the reader study included (the demo has reads)
        for sid in ("localisation", "saliency", "probes", "patching", "ablation", "shapley", "truthfulness",
                    "readers", "provenance"):
            assert page.locator(f"section#{sid}").count() == 1, sid
        assert page.locator("section#saliency figure").count() >= 2  # the shown cases and the Grad-CAM strip
        # JavaScript only sorts: clicking a header sorts the rows of a table
        table = page.locator("section#ablation table").first
        before = table.locator("tbody tr td:nth-child(2)").all_inner_texts()
        table.locator("th").nth(1).click()
        after = table.locator("tbody tr td:nth-child(2)").all_inner_texts()
        assert after == sorted(before, key=float) and sorted(after) == sorted(before)
        shot = tmp_path / "report_first_screen.png"
        page.screenshot(path=str(shot))
        assert shot.stat().st_size > 10_000
    finally:
        browser.close()
        pw.stop()
    # readable with JavaScript off, and the print stylesheet hides the navigation
    pw, browser, page, _console, _requests, _dialogs = _open(report, javascript=False, media="print")
    try:
        assert "Findings" in page.inner_text("#findings h2")
        assert page.eval_on_selector_all("figure img", "els => els.every(e => e.naturalWidth > 0)")
        assert page.eval_on_selector("nav", "e => getComputedStyle(e).display") == "none"
    finally:
        browser.close()
        pw.stop()


@pytest.mark.timeout(1200)
def test_report_rerenders_byte_for_byte_without_the_model(small_demo, tmp_path, monkeypatch):
    out = tmp_path / "run"
    shutil.copytree(small_demo.out / "audit", out)
    original = (out / "report.html").read_text(encoding="utf-8")
    # the model is not needed: its weights are gone, and loading any model fails
    monkeypatch.setattr("audit.models.load_model", lambda *a, **k: pytest.fail("the report loaded the model"))
    res = CliRunner().invoke(app, ["report", str(out), "--readers", str(small_demo.out / "readers")])
    assert res.exit_code == 0, res.output
    again = (out / "report.html").read_text(encoding="utf-8")
    assert _strip_rendered(again) == _strip_rendered(original)
    assert again != _strip_rendered(again)  # the rendering time is the only part removed
    assert json.loads((out / "findings.json").read_text()) == json.loads(
        (small_demo.out / "audit" / "findings.json").read_text())


HOSTILE_CLASS = '<script>window.__pwned = 1; alert("class")</script>'
HOSTILE_CASE = '"><img src=x onerror="window.__pwned = 2; alert(\'case\')">'


@pytest.mark.timeout(1200)
def test_hostile_case_id_and_class_name_are_text_and_run_nothing(small_demo, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(small_demo.out / "audit", out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["class_names"] = [manifest["class_names"][0], HOSTILE_CLASS]
    (out / "manifest.json").write_text(json.dumps(manifest))
    # one shown case gets a hostile id everywhere the report reads case ids
    with np.load(out / "maps" / "cases" / "inputs.npz") as z:
        arrays = {k: z[k] for k in z.files}
    old = str(arrays["case_ids"][0])
    arrays["case_ids"] = np.array([HOSTILE_CASE if str(c) == old else str(c) for c in arrays["case_ids"]])
    np.savez_compressed(out / "maps" / "cases" / "inputs.npz", **arrays)
    for path in (out / "tables").glob("*.parquet"):
        df = pd.read_parquet(path)
        if "case_id" in df:
            df["case_id"] = df["case_id"].replace(old, HOSTILE_CASE)
            df.to_parquet(path, index=False)
    page_path = render_report(out)
    html = page_path.read_text(encoding="utf-8")
    assert HOSTILE_CLASS not in html and "<img src=x" not in html  # escaped in the source
    pw, browser, page, console, _requests, dialogs = _open(page_path)
    try:
        text = page.inner_text("body")
        assert HOSTILE_CLASS in text and HOSTILE_CASE in text  # shown as text
        assert dialogs == [] and page.evaluate("window.__pwned === undefined")
        assert page.locator("script").count() == 1  # the report's own sorting script only
        assert page.locator("img[src='x']").count() == 0
        assert [c for c in console if c[0] == "error"] == []
    finally:
        browser.close()
        pw.stop()
