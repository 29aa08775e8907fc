"""Driving OHIF 3.13 in Chromium the way a user does, and reading what it shows.

Studies are opened by URL, results by double-clicking their thumbnails in OHIF's study browser
(as a user does); OHIF's own services and cornerstone3D, which OHIF puts on ``window``
(``window.services``, ``window.cornerstone``), are only read, or used for what a user does with
the mouse (scroll to a slice, hide a segment), so the pixels read back are OHIF's rendering.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

if TYPE_CHECKING:  # Playwright is imported where it is used: without it the tests skip, not break
    from playwright.sync_api import Page

#: Seconds to wait for OHIF to show a study or load a result.
LOAD_TIMEOUT_S = 60

#: Records OHIF's error notifications (the toasts a user sees) in window.__aiNodeErrors.
_RECORD_ERROR_NOTIFICATIONS = """() => {
  const service = window.services.uiNotificationService;
  if (service.__aiNodeRecording) return;
  window.__aiNodeErrors = [];
  const show = service.show.bind(service);
  service.show = (notification) => {
    if (notification && notification.type === 'error') {
      window.__aiNodeErrors.push(`${notification.title || ''}: ${notification.message || ''}`);
    }
    return show(notification);
  };
  service.__aiNodeRecording = true;
}"""

_ACTIVE_VIEWPORT = """
  const viewportId = window.services.viewportGridService.getActiveViewportId();
  const viewport = window.services.cornerstoneViewportService.getCornerstoneViewport(viewportId);
"""


@dataclass
class OhifPage:
    """One OHIF tab, with what went wrong in it so far."""

    page: Page
    base_url: str
    page_errors: list[str] = field(default_factory=list)
    #: what of the first-run tour and banner was on screen when the study opened
    overlays_at_open: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.page.on("pageerror", lambda error: self.page_errors.append(str(error)))

    # --- opening -----------------------------------------------------------------------------

    def open_study(self, study_instance_uid: str) -> None:
        """Open the study in OHIF's basic viewer and wait until its first image is drawn."""
        self.page.goto(f"{self.base_url}/viewer?StudyInstanceUIDs={study_instance_uid}")
        self.page.wait_for_function(
            f"""() => {{
              try {{
                {_ACTIVE_VIEWPORT}
                return !!viewport?.getImageIds?.().length && !!viewport.getImageData?.();
              }} catch (notYet) {{
                return false;  // OHIF's services exist before their React state does
              }}
            }}""",
            timeout=LOAD_TIMEOUT_S * 1000,
        )
        self.page.evaluate(_RECORD_ERROR_NOTIFICATIONS)
        self.page.wait_for_timeout(1000)  # the tour and the banner open just after the viewport
        self.overlays_at_open = self.first_run_overlays()
        self.dismiss_first_run_overlays()

    def first_run_overlays(self) -> list[str]:
        """What of OHIF's first-run tour and investigational-use banner is on screen."""
        shown = []
        if self.page.locator(".shepherd-element").is_visible():
            shown.append("the first-run tour")
        if self.page.get_by_role("button", name="Confirm and Hide").is_visible():
            shown.append("the investigational-use banner")
        return shown

    def dismiss_first_run_overlays(self) -> None:
        """Close the tour and the banner if OHIF shows them (the node's app-config turns them off)."""
        if self.page.locator(".shepherd-element").is_visible():
            self.page.keyboard.press("Escape")
        banner_button = self.page.get_by_role("button", name="Confirm and Hide")
        if banner_button.is_visible():
            banner_button.click()

    def display_set_uid(self, series_instance_uid: str) -> str:
        """OHIF's displaySetInstanceUID of the display set made from a series."""
        uid = self.page.evaluate(
            """(series) => window.services.displaySetService.getActiveDisplaySets()
                 .find((d) => d.SeriesInstanceUID === series)?.displaySetInstanceUID ?? null""",
            series_instance_uid,
        )
        assert uid, f"OHIF made no display set of series {series_instance_uid}"
        return str(uid)

    def open_display_set(self, series_instance_uid: str) -> str:
        """Double-click the series' thumbnail in the study browser, as a user opens a result."""
        uid = self.display_set_uid(series_instance_uid)
        self.page.locator(f'[id="thumbnail-{uid}"]').dblclick()
        return uid

    def errors(self) -> list[str]:
        """Uncaught page errors, OHIF error notifications and a crashed viewport, so far."""
        errors = [f"page error: {error}" for error in self.page_errors]
        errors += [
            f"OHIF notification: {text}" for text in self.page.evaluate("() => window.__aiNodeErrors || []")
        ]
        if self.page.get_by_text("Something went wrong").first.is_visible():
            errors.append("OHIF shows 'Something went wrong' in place of the viewport")
        return errors

    # --- segmentations -----------------------------------------------------------------------

    def wait_for_segmentation(self, display_set_uid: str, segment_count: int) -> list[str]:
        """Wait until the SEG display set is loaded and shown on the active viewport.

        Returns what went wrong instead (nothing: it is shown): OHIF's errors, or a timeout.
        """
        try:
            self.page.wait_for_function(
                f"""([uid, count]) => {{
                  if ((window.__aiNodeErrors || []).length) return true;  // OHIF gave up
                  const displaySet = window.services.displaySetService.getDisplaySetByUID(uid);
                  if (!displaySet?.isLoaded) return false;
                  {_ACTIVE_VIEWPORT}
                  const shown = window.services.segmentationService.getSegmentationRepresentations(viewportId)
                    .find((r) => r.segmentationId === uid);
                  const segmentation = window.services.segmentationService.getSegmentation(uid);
                  return !!shown && Object.keys(segmentation?.segments ?? {{}}).length === count;
                }}""",
                arg=[display_set_uid, segment_count],
                timeout=LOAD_TIMEOUT_S * 1000,
            )
        except _playwright_timeout():
            return [*self.errors(), f"not shown after {LOAD_TIMEOUT_S} s"]
        return self.errors()

    def segmentation(self, segmentation_id: str) -> dict[str, Any]:
        """OHIF's segmentation (for a SEG, its id is the SEG display set's UID): label, segments."""
        return dict(
            self.page.evaluate(
                """(uid) => {
                  const segmentation = window.services.segmentationService.getSegmentation(uid);
                  return {label: segmentation.label, segments: Object.values(segmentation.segments)
                    .map((s) => ({index: s.segmentIndex, label: s.label}))};
                }""",
                segmentation_id,
            )
        )

    def segmentation_panel_rows(self) -> list[tuple[str, tuple[int, int, int]]]:
        """Open OHIF's segmentation panel; each segment row's label and colour swatch."""
        if not self.page.locator('[data-cy="data-row-title"]').first.is_visible():
            self.page.locator('[data-cy="panelSegmentation-btn"]').click()
        rows = self.page.locator('[data-cy="data-row"]')
        rows.first.wait_for(timeout=LOAD_TIMEOUT_S * 1000)
        found = []
        for row in rows.all():
            label = row.locator('[data-cy="data-row-title"]').inner_text().strip()
            swatch = row.locator('[data-cy="data-row-colorhex"]').evaluate(
                "(element) => getComputedStyle(element).backgroundColor"
            )
            red, green, blue = (int(v) for v in re.findall(r"\d+", swatch)[:3])
            found.append((label, (red, green, blue)))
        return found

    def set_visible_segments(
        self, segmentation_id: str, visible: Collection[int], indices: Iterable[int]
    ) -> None:
        """Show the segments in ``visible`` and hide the others, as the panel's eye icons do."""
        self.page.evaluate(
            f"""([segmentationId, visible, indices]) => {{
              {_ACTIVE_VIEWPORT}
              for (const index of indices) {{
                window.services.segmentationService.setSegmentVisibility(
                  viewportId, segmentationId, index, visible.includes(index));
              }}
            }}""",
            [segmentation_id, list(visible), list(indices)],
        )

    # --- where things are drawn --------------------------------------------------------------

    def show_image(self, sop_instance_uid: str) -> None:
        """Scroll the active viewport to the image with this SOP Instance UID."""
        index = self.page.evaluate(
            f"""async (sop) => {{
              {_ACTIVE_VIEWPORT}
              const index = viewport.getImageIds().findIndex((id) => id.includes(`/instances/${{sop}}/`));
              if (index >= 0) await viewport.setImageIdIndex(index);
              return index;
            }}""",
            sop_instance_uid,
        )
        assert index >= 0, f"the active viewport does not show image {sop_instance_uid}"

    def page_position(self, world: Sequence[float]) -> tuple[float, float]:
        """Where a patient-coordinate point (mm) is drawn on the page, in CSS pixels."""
        x, y = self.page.evaluate(
            f"""(world) => {{
              {_ACTIVE_VIEWPORT}
              const [x, y] = viewport.worldToCanvas(world);
              const box = viewport.canvas.getBoundingClientRect();
              return [box.left + x, box.top + y];
            }}""",
            list(world),
        )
        return float(x), float(y)

    def inside_viewport(self, x: float, y: float) -> bool:
        """Whether a page position lies on the active viewport's canvas."""
        return bool(
            self.page.evaluate(
                f"""([x, y]) => {{
                  {_ACTIVE_VIEWPORT}
                  const box = viewport.canvas.getBoundingClientRect();
                  return box.left <= x && x < box.right && box.top <= y && y < box.bottom;
                }}""",
                [x, y],
            )
        )

    def pixel(self, x: float, y: float, *, settle_s: float = 10.0) -> tuple[float, float, float]:
        """Mean RGB of the 3x3 screen pixels around (x, y), once two reads in a row agree."""
        deadline = time.monotonic() + settle_s
        previous = None
        while True:
            self.page.wait_for_timeout(300)
            shot = Image.open(io.BytesIO(self.page.screenshot())).convert("RGB")
            column, row = round(x), round(y)
            patch = np.asarray(shot.crop((column - 1, row - 1, column + 2, row + 2)), dtype=float)
            current = tuple(float(v) for v in patch.reshape(-1, 3).mean(axis=0))
            if current == previous or time.monotonic() > deadline:
                return current[0], current[1], current[2]
            previous = current

    # --- structured reports ------------------------------------------------------------------

    def wait_for_sr(self, display_set_uid: str) -> None:
        """Wait until OHIF has loaded the SR display set and drawn it in the active viewport."""
        self.page.wait_for_function(
            """(uid) => {
              const displaySet = window.services.displaySetService.getDisplaySetByUID(uid);
              return !!displaySet?.isLoaded && (displaySet.measurements || []).every((m) => m.loaded);
            }""",
            arg=display_set_uid,
            timeout=LOAD_TIMEOUT_S * 1000,
        )

    def drawn_annotation_texts(self, *, timeout_s: float = 10.0) -> list[str]:
        """Lines of the measurement text boxes drawn over the active viewport, once drawn.

        OHIF draws them (SVG) a moment after the image; the lines are read again until two
        reads in a row agree. OHIF 3.13 sometimes draws an SR's annotations only at the
        viewport's next render (seen with the first SR opened in a tab; a user's next scroll
        shows them): after half the time the viewport is asked to render once. An empty list
        if nothing is drawn within ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        nudge_at = time.monotonic() + timeout_s / 2
        previous: list[str] | None = None
        while True:
            texts: list[str] = self.page.evaluate(
                """() => Array.from(document.querySelectorAll('[data-cy="viewport-pane"] svg text tspan'))
                     .map((t) => t.textContent.trim()).filter((t) => t)"""
            )
            if (texts and texts == previous) or time.monotonic() > deadline:
                return texts
            if not texts and time.monotonic() > nudge_at:
                self.page.evaluate(f"() => {{ {_ACTIVE_VIEWPORT} viewport.render(); }}")
                nudge_at = deadline
            previous = texts
            self.page.wait_for_timeout(300)

    def next_measurement(self) -> None:
        """OHIF's arrow in the SR viewport's corner: go to the report's next measurement."""
        before = self._image_index()
        self.page.locator('[data-cy="viewport-action-arrows-right"]').click()
        try:  # the next measurement may lie on the same image: then nothing moves
            self.page.wait_for_function(
                f"""(before) => {{
                  {_ACTIVE_VIEWPORT}
                  return viewport.getCurrentImageIdIndex() !== before;
                }}""",
                arg=before,
                timeout=5000,
            )
        except _playwright_timeout():
            pass

    def _image_index(self) -> int:
        return int(
            self.page.evaluate(
                f"""() => {{
                  {_ACTIVE_VIEWPORT}
                  return viewport.getCurrentImageIdIndex();
                }}"""
            )
        )


def _playwright_timeout() -> type[Exception]:
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    return PlaywrightTimeoutError
