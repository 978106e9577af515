"""Pages of a web app as a user's browser renders them, for tests: headless Chromium (Debian's
``chromium`` package) prints the DOM after the page's scripts ran and saves a screenshot.

Each page gets a new browser profile, so nothing a page stored (localStorage) carries over.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser")


def chromium() -> str | None:
    """The headless Chromium to use, or None when none is installed."""
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


def visible_text(dom: str) -> str:
    """The text a reader sees: no scripts, styles or tags; whitespace collapsed."""
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S | re.I)
    text = re.sub(r"<[^>]+>", " ", text)
    return " ".join(html.unescape(text).split())


def render(url: str, screenshot: Path, expect: list[str],
           budgets_ms: tuple[int, ...] = (10_000, 30_000, 120_000)) -> str:
    """The visible text of ``url`` once every string of ``expect`` shows, trying each budget of
    virtual time in turn (a cold server, or a machine busy with other tests, answers slower: a CI
    run under load once left the run page's charts spinning after 30 s); the screenshot of the
    last try is saved at ``screenshot``. Returns the last text even when something is still missing."""
    text = ""
    for budget in budgets_ms:
        with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
            done = subprocess.run(
                [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 f"--user-data-dir={profile}", "--window-size=2400,1200", "--hide-scrollbars",
                 f"--virtual-time-budget={budget}", f"--screenshot={screenshot}", "--dump-dom", url],
                capture_output=True, text=True, timeout=budget / 1000 + 90, stdin=subprocess.DEVNULL)
        text = visible_text(done.stdout)
        if all(s in text for s in expect):
            break
    return text
