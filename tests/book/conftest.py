"""The browser test's options and fixtures: the built book's HTML folder, its pages, Chromium.

Run by `make test-browser` (`pytest tests/book --book-html _build/test/html`); the unit-test run
ignores this folder (tests/conftest.py). Chromium is the system one (`apt-get install -y
chromium`), driven by Playwright without `playwright install`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("book", "the built book in a browser")
    group.addoption("--book-html", default=os.environ.get("IEMLIB_BOOK_HTML"),
                    help="the book's HTML folder, e.g. _build/test/html (env IEMLIB_BOOK_HTML)")
    group.addoption("--screenshots", default=None,
                    help="folder for full-page screenshots (default: screenshots/ beside the HTML folder)")
    group.addoption("--chromium", default=os.environ.get("CHROMIUM", "/usr/bin/chromium"),
                    help="the Chromium executable (env CHROMIUM; default /usr/bin/chromium)")


def book_pages(html: Path) -> list[str]:
    """Every page of the built book, relative to its HTML folder.

    Sphinx's own folders (_static, _sources, ...) and redirects (index.html) are not pages.
    """
    return sorted(
        p.relative_to(html).as_posix()
        for p in html.rglob("*.html")
        if not any(part.startswith("_") for part in p.relative_to(html).parts)
        and 'http-equiv="Refresh"' not in p.read_text("utf-8")[:1000]
    )


def html_folder(config: pytest.Config) -> Path | None:
    """The HTML folder named by --book-html when it holds a built book, else None."""
    value = config.getoption("--book-html")
    return Path(value).resolve() if value and Path(value, "index.html").is_file() else None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # One set of tests a page; without a book, one placeholder page whose fixture fails loudly.
    if "page_path" in metafunc.fixturenames:
        html = html_folder(metafunc.config)
        pages = (book_pages(html) if html else None) or ["index.html"]
        metafunc.parametrize("page_path", pages, scope="module")


@pytest.fixture(scope="session")
def book_html(pytestconfig: pytest.Config) -> Path:
    """The built book's HTML folder; fails (never skips) when there is none."""
    html = html_folder(pytestconfig)
    if html is None:
        value = pytestconfig.getoption("--book-html")
        pytest.fail(
            f"no built book at {value!r}: pass --book-html DIR (or IEMLIB_BOOK_HTML) naming a folder "
            "with index.html; `make test-book` builds one into _build/test/html", pytrace=False)
    return html


@pytest.fixture(scope="session")
def pages(book_html: Path) -> list[str]:
    """The built book's pages, relative to its HTML folder."""
    return book_pages(book_html)


@pytest.fixture(scope="session")
def screenshots(pytestconfig: pytest.Config, book_html: Path) -> Path:
    """The folder for the pages' full-page screenshots."""
    return Path(pytestconfig.getoption("--screenshots") or book_html.parent / "screenshots")


@pytest.fixture(scope="session")
def browser(pytestconfig: pytest.Config) -> Iterator[Browser]:
    """Headless system Chromium, driven by Playwright."""
    executable = shutil.which(pytestconfig.getoption("--chromium"))
    if executable is None:
        pytest.fail(f"no Chromium at {pytestconfig.getoption('--chromium')!r}: "
                    "apt-get install -y chromium (or pass --chromium PATH)", pytrace=False)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
