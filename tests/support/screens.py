"""What every screen test checks, as a person would see it: the tool launched from the development
LMS **in its iframe**, at a phone's and a desktop's width, nothing wider than the viewport, a
screenshot written where the README says, and axe-core (vendored from npm) finding no serious or
critical accessibility violation.

    frame = lms_launch(page, base, user="student")      # clicks the dev LMS's launch button
    screen_check(page, frame, "chat-empty")              # both widths: overflow, screenshot, axe

Screenshots go to SCREENSHOT_DIR, by default var/screens/ (named in the README); docs/screens.md
shows copies of them from docs/screens/ (refresh: see docs/screens.md).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from playwright.sync_api import Frame, Page

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}
WIDTHS = (PHONE, DESKTOP)
ROOT = Path(__file__).resolve().parents[2]
AXE = ROOT / "tests" / "support" / "vendor" / "axe-core" / "axe.min.js"
BLOCKING_IMPACTS = frozenset({"serious", "critical"})


def screens_dir() -> Path:
    folder = Path(os.environ.get("SCREENSHOT_DIR") or ROOT / "var" / "screens")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def tool_frame(page: Page) -> Frame:
    frame = page.frame(name="tool")
    assert frame is not None, "the development LMS page has no tool frame"
    return frame


def lms_launch(page: Page, base: str, *, user: str, link: str | None = None, role: str | None = None) -> Frame:
    """Open the development LMS and click "Launch as <user>" (in the card of `link`, a link title,
    when given); wait until the tool shows the launched role in the frame and return the frame."""
    page.goto(base + "/devlms/")
    scope = page.locator(".card", has=page.get_by_role("heading", name=link, exact=True)) if link else page
    scope.get_by_role("link", name=f"Launch as {user} (").first.click()
    frame = page.frame_locator('iframe[name="tool"]')
    frame.locator(f'[data-testid="role"]:text-is("{role or user}")').wait_for()
    return tool_frame(page)


def overflow(target: Page | Frame) -> int:
    """How many CSS pixels the document is wider than its viewport (0 when it fits)."""
    return int(target.evaluate("document.scrollingElement.scrollWidth - window.innerWidth"))


def axe_violations(target: Page | Frame, *, impacts: frozenset[str] = BLOCKING_IMPACTS) -> list[dict]:
    """axe-core's violations of the given impacts on the document of `target` (a page or a frame)."""
    if not target.evaluate("typeof window.axe !== 'undefined'"):
        target.add_script_tag(path=str(AXE))
    result = target.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [
        {
            "id": violation["id"],
            "impact": violation["impact"],
            "help": violation["help"],
            "nodes": [node["target"] for node in violation["nodes"]][:5],
        }
        for violation in result["violations"]
        if violation["impact"] in impacts
    ]


def screen_check(page: Page, frame: Frame | None, name: str, *, widths=WIDTHS, full_page: bool = True) -> None:
    """At each width: neither the page nor the tool's frame scrolls sideways, a screenshot
    `<name>-<w>x<h>.png` is written, and axe finds no serious or critical violation in the tool.
    `frame` None checks a page opened on its own (a review tab), screenshotted whole; with a frame
    the screenshot is the frame's box, as the person sees the tool. Leaves the page at the last width."""
    folder = screens_dir()
    for viewport in widths:
        page.set_viewport_size(viewport)
        page.wait_for_timeout(150)  # let a layout change settle (media queries, textarea growth)
        target = frame or page
        size = f"{viewport['width']}x{viewport['height']}"
        assert overflow(page) <= 1, f"{name} at {size}: the page is {overflow(page)} px wider than the screen"
        if frame is not None:
            assert overflow(frame) <= 1, f"{name} at {size}: the tool is {overflow(frame)} px wider than its frame"
        path = folder / f"{name}-{size}.png"
        if frame is not None:  # the tool as the person sees it in the LMS: the frame's box
            frame.frame_element().screenshot(path=path)
        else:
            page.screenshot(path=path, full_page=full_page)
        violations = axe_violations(target)
        assert not violations, f"{name} at {size}: axe-core found\n" + json.dumps(violations, indent=1)
