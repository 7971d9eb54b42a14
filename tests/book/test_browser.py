"""The built book in a real browser (system Chromium through Playwright), page by page.

Every page must load from its own files only (anything but file: is aborted and reported),
with its figures loaded, its math typeset by MathJax, its widgets rendered and no uncaught
JavaScript error; the synthetic-image browser's slider must change the image shown. A full-page
screenshot of every page lands in the screenshots folder (default: beside the HTML folder).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator, Page, Request, Route
from playwright.sync_api import TimeoutError as PlaywrightTimeout

WIDGET_VIEW = 'script[type="application/vnd.jupyter.widget-view+json"]'
IMAGE_BROWSER = ".iem-image-browser"  # the chapters' synthetic-image browser (a widget box)
# What the widget manager shows instead of a widget it failed to render.
WIDGET_ERROR = re.compile(r"error (displaying|creating|rendering) widget|could not (be rendered|create)"
                          r"|show javascript error", re.I)
# A known upstream bug, harmless: sphinx-thebe's configuration script is included twice.
KNOWN_PAGE_ERRORS = ("Identifier 'THEBE_JS_URL' has already been declared",)
TIMEOUT_MS = 30_000

# Every widget view rendered: the manager puts the view in a .widget-subarea beside its script.
WIDGETS_RENDERED = f"""() => [...document.querySelectorAll('{WIDGET_VIEW}')].every(
    view => view.parentElement.querySelector('.widget-subarea .jupyter-widgets'))"""
# Raw TeX left in the text a reader sees (code, scripts and typeset math excluded).
RAW_TEX = r"""() => {
    const skip = 'pre, code, script, style, textarea, mjx-container, .highlight';
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    const raw = [];
    for (let node; (node = walker.nextNode());) {
        if (node.parentElement.closest(skip)) continue;
        const text = node.textContent;
        if (/\$\$|\\\(|\\\[|\\begin\{/.test(text)) raw.push(text.trim().slice(0, 80));
    }
    return raw;
}"""


@dataclass(repr=False)
class Visit:
    """A page loaded in Chromium, with what happened while it loaded."""

    page: Page
    outside: list[str] = field(default_factory=list)  # requests to anything but file:, aborted
    failed: list[str] = field(default_factory=list)  # file: requests that failed
    errors: list[str] = field(default_factory=list)  # uncaught JavaScript errors
    timeouts: list[str] = field(default_factory=list)  # what the page never finished


def wait_for(visit: Visit, what: str, script: str) -> None:
    """Wait until `script` is truthy in the page; note a timeout instead of raising."""
    try:
        visit.page.wait_for_function(script, timeout=TIMEOUT_MS)
    except PlaywrightTimeout:
        visit.timeouts.append(what)


def settle(visit: Visit) -> None:
    """Wait for MathJax, the widgets and every image (lazy ones made eager)."""
    page = visit.page
    if page.locator('script[src*="mathjax"]').count():
        wait_for(visit, "MathJax", "() => window.MathJax?.startup?.promise")
        if "MathJax" not in visit.timeouts:
            page.evaluate("() => MathJax.startup.promise")
    if page.locator(WIDGET_VIEW).count():
        wait_for(visit, "widgets", WIDGETS_RENDERED)
    wait_for(visit, "images", """() => [...document.images].every(
        img => { img.loading = 'eager'; return img.complete; })""")


@pytest.fixture(scope="module")
def visit(browser: Browser, book_html: Path, screenshots: Path, page_path: str) -> Iterator[Visit]:
    """The page loaded once for all its checks, with a full-page screenshot saved."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    visit = Visit(context.new_page())

    def files_only(route: Route) -> None:
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            visit.outside.append(route.request.url)
            route.abort()

    def failed(request: Request) -> None:
        if request.url.startswith("file:"):  # the outside ones are in visit.outside
            visit.failed.append(f"{request.url} ({request.failure})")

    context.route("**/*", files_only)
    visit.page.on("requestfailed", failed)
    visit.page.on("pageerror", lambda error: visit.errors.append(error.message))
    visit.page.goto((book_html / page_path).as_uri(), wait_until="load", timeout=TIMEOUT_MS)
    settle(visit)
    shot = screenshots / Path(page_path).with_suffix(".png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    visit.page.screenshot(path=shot, full_page=True)
    yield visit
    context.close()


def test_book_has_pages(book_html: Path, pages: list[str]) -> None:
    assert len(pages) > 1, f"{book_html} holds no book pages but {pages}"


def test_book_has_an_image_browser(book_html: Path, pages: list[str]) -> None:
    name = IMAGE_BROWSER.removeprefix(".")  # the class is in the widget state embedded in the page
    assert any(name in (book_html / p).read_text("utf-8") for p in pages), (
        f"no page of the book has a synthetic-image browser (a widget box of class {name})")


def test_nothing_requested_from_outside(visit: Visit) -> None:
    assert not visit.outside, "requests to outside the book (aborted):\n  " + "\n  ".join(visit.outside)


def test_page_loads_cleanly(visit: Visit) -> None:
    errors = [e for e in visit.errors if not e.startswith(KNOWN_PAGE_ERRORS)]
    problems = ([f"missing file: {f}" for f in visit.failed] + [f"JavaScript error: {e}" for e in errors]
                + [f"timed out waiting for {t}" for t in visit.timeouts])
    assert not problems, "\n  ".join(["the page did not load cleanly:", *problems])


def test_images_load(visit: Visit) -> None:
    broken = visit.page.evaluate("""() => [...document.images]
        .filter(img => !img.complete || img.naturalWidth === 0).map(img => img.src.slice(0, 120))""")
    assert not broken, "images that did not load:\n  " + "\n  ".join(broken)


def test_math_is_typeset(visit: Visit) -> None:
    page = visit.page
    math = page.locator(".math").count()  # Sphinx wraps every formula in .math
    untypeset = page.evaluate("""() => [...document.querySelectorAll('.math')]
        .filter(m => !m.querySelector('mjx-container')).map(m => m.textContent.trim().slice(0, 80))""")
    assert not untypeset, (f"{len(untypeset)} of {math} formulas not typeset by MathJax:\n  "
                           + "\n  ".join(untypeset))
    errors = page.locator("mjx-merror").all_text_contents()
    assert not errors, "MathJax errors: " + "; ".join(errors)
    raw = page.evaluate(RAW_TEX)
    assert not raw, "raw TeX left in the page:\n  " + "\n  ".join(raw)


def test_widgets_render(visit: Visit) -> None:
    page = visit.page
    views = page.locator(WIDGET_VIEW).count()
    rendered = page.locator(".widget-subarea .jupyter-widgets").count()
    assert views == 0 or rendered >= views, f"{views} widgets on the page, {rendered} rendered"
    errors = [t for t in page.locator(".widget-subarea").all_inner_texts() if WIDGET_ERROR.search(t)]
    errors += ["(an error widget)"] * page.locator(".jupyter-widgets-error-widget").count()
    assert not errors, "widgets that failed to render:\n  " + "\n  ".join(errors)


def shown_images(box: Locator) -> tuple[list[str], list[bytes]]:
    """The src and the pixels (a screenshot) of each image the browser shows."""
    images = box.locator("img:visible").all()
    assert images, "the image browser shows no image"
    return [img.get_attribute("src") or "" for img in images], [img.screenshot() for img in images]


def test_image_browser_sliders_change_the_image(visit: Visit) -> None:
    boxes = visit.page.locator(IMAGE_BROWSER).all()  # none on most pages: nothing to check
    for i, box in enumerate(boxes):
        handles = box.locator(".widget-slider .noUi-handle:visible").all()
        assert handles, f"image browser {i} has no slider"
        for j, handle in enumerate(handles):
            before = shown_images(box)
            at_end = handle.get_attribute("aria-valuenow") == handle.get_attribute("aria-valuemax")
            handle.press("ArrowLeft" if at_end else "ArrowRight")  # one step, as a reader would
            try:  # the jslink and the Stack's re-render are asynchronous
                visit.page.wait_for_function(
                    "([box, srcs]) => [...box.querySelectorAll('img')].some("
                    "img => img.checkVisibility() && !srcs.includes(img.src))",
                    arg=[box.element_handle(), before[0]], timeout=5_000)
            except PlaywrightTimeout:
                pass
            after = shown_images(box)
            where = f"image browser {i}, slider {j}"
            assert after[0] != before[0], f"{where}: moving the slider did not change the image shown"
            assert after[1] != before[1], f"{where}: the image shown changed but its pixels did not"
