"""What a series must be for a pipeline to run on it, and which series a pipeline gets.

Pure: :class:`SeriesCriteria` is part of the pipeline contract (``node.pipeline.base``
re-exports it for pipeline authors); :func:`select_series` is the one choice routing, the
worker and ``ai-node pipelines run`` all make.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

from pydicom.uid import UID

from node.errors import InputSeriesError, NoMatchingSeriesError
from node.study.series import (
    SINGLE_FRAME_SLICE_SOP_CLASSES,
    SeriesSummary,
    SlicePlane,
    classify_orientation,
)


class Orientation(enum.Enum):
    """The slice orientation a pipeline accepts."""

    AXIAL = "axial"
    ANY = "any"


@dataclass(frozen=True)
class SeriesCriteria:
    """What a series must be for a pipeline to run on it.

    ``body_parts`` are Body Part Examined (0018,0015) defined terms (PS3.16 Annex L, e.g.
    ``HEAD``, ``CHEST``), compared case-insensitively; empty accepts any (and a series
    without the attribute). ``slice_thickness_mm`` is an inclusive range of Slice Thickness
    (0018,0050); ``None`` accepts any.
    """

    modalities: frozenset[str]
    min_slices: int = 1
    orientation: Orientation = Orientation.ANY
    body_parts: frozenset[str] = frozenset()
    slice_thickness_mm: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.min_slices, bool) or not isinstance(self.min_slices, int) or self.min_slices < 1:
            raise ValueError(f"SeriesCriteria min_slices is {self.min_slices!r}; it must be an integer ≥ 1")
        if self.slice_thickness_mm is not None:
            low, high = self.slice_thickness_mm
            if not (math.isfinite(low) and math.isfinite(high) and 0 <= low <= high):
                raise ValueError(
                    f"SeriesCriteria slice_thickness_mm is {self.slice_thickness_mm!r}; it must be "
                    "(minimum, maximum) in millimetres with 0 ≤ minimum ≤ maximum"
                )
        object.__setattr__(self, "body_parts", frozenset(part.upper() for part in self.body_parts))

    def unmet_details(self, *, body_part: str | None, slice_thickness_mm: float | None) -> list[str]:
        """Why a series' Body Part Examined and Slice Thickness fail these criteria (empty: they
        meet them). Modality, slice count and orientation are checked by
        :func:`matches`."""
        reasons = []
        if self.body_parts and (body_part or "").strip().upper() not in self.body_parts:
            wanted = " or ".join(sorted(self.body_parts))
            reasons.append(f"body part {body_part or '(none)'} is not {wanted}")
        if self.slice_thickness_mm is not None:
            low, high = self.slice_thickness_mm
            if slice_thickness_mm is None:
                reasons.append("slice thickness unknown (no Slice Thickness)")
            elif not low <= slice_thickness_mm <= high:
                reasons.append(f"slice thickness {slice_thickness_mm:g} mm is outside {low:g}–{high:g} mm")
        return reasons


def matches(summary: SeriesSummary, criteria: SeriesCriteria) -> list[str]:
    """Return why ``summary`` does not meet ``criteria``; an empty list means it does."""
    reasons = []
    if summary.modality not in criteria.modalities:
        wanted = " or ".join(sorted(criteria.modalities)) or "no modality at all"
        reasons.append(f"modality {summary.modality or '(none)'} is not {wanted}")
    if summary.instance_count < criteria.min_slices:
        reasons.append(f"fewer than {criteria.min_slices} slices")
    if summary.sop_class_uid is not None and summary.sop_class_uid not in SINGLE_FRAME_SLICE_SOP_CLASSES:
        reasons.append(f"{UID(summary.sop_class_uid).name} is not a single-frame CT, MR or PET image")
    if criteria.orientation is Orientation.AXIAL:
        if summary.image_orientation is None:
            reasons.append("orientation unknown (no Image Orientation (Patient))")
        else:
            try:
                plane = classify_orientation(summary.image_orientation)
            except InputSeriesError:
                reasons.append("its Image Orientation (Patient) is invalid")
            else:
                if plane is not SlicePlane.AXIAL:
                    reasons.append(f"{plane.value}, not axial")
    reasons += criteria.unmet_details(
        body_part=summary.body_part, slice_thickness_mm=summary.slice_thickness_mm
    )
    return reasons


def select_series(candidates: Sequence[SeriesSummary], criteria: SeriesCriteria) -> SeriesSummary:
    """Pick the series a pipeline runs on: among those matching ``criteria``, the one with the
    most instances (then the lowest series number, then the UID, so the choice is repeatable).

    Raises :class:`~node.errors.NoMatchingSeriesError` listing why each series was rejected.
    """
    matching = [summary for summary in candidates if not matches(summary, criteria)]
    if matching:
        return min(
            matching,
            key=lambda s: (
                -s.instance_count,
                s.series_number if s.series_number is not None else math.inf,
                s.series_instance_uid,
            ),
        )
    wanted = _criteria_text(criteria)
    if not candidates:
        raise NoMatchingSeriesError(f"No series matches {wanted}: the study has no series.")
    rejections = "; ".join(
        f"{summary.label()}: {', '.join(matches(summary, criteria))}" for summary in candidates
    )
    raise NoMatchingSeriesError(f"No series matches {wanted}: {rejections}.")


def _criteria_text(criteria: SeriesCriteria) -> str:
    parts = [" or ".join(sorted(criteria.modalities)) or "any modality"]
    if criteria.min_slices > 1:
        parts.append(f"at least {criteria.min_slices} slices")
    if criteria.orientation is not Orientation.ANY:
        parts.append(criteria.orientation.value)
    return f"the criteria ({', '.join(parts)})"
