"""A stored study as routing and the worker see it, before any pixel is read.

``node.orthanc.study`` builds a :class:`StudySummary` from Orthanc's tags; routing
(``node.intake.plan``), the rule tester and the worker's fetch read it. The loop guard lives
here, with the summary: series the node produced itself (its Manufacturer, SEG, SR and other
non-image objects) are never inputs, so storing results into a study, which makes it stable
again, never creates a job.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from node import MANUFACTURER
from node.study.attributes import SeriesAttributes, StudyAttributes
from node.study.series import SeriesSummary

#: Modalities of objects that are never model inputs (PS3.3 C.7.3.1.1.1 defined terms).
NON_IMAGE_MODALITIES = frozenset(
    {"SEG", "SR", "KO", "PR", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "REG", "FID", "DOC", "OT"}
)


@dataclass(frozen=True)
class StudySeries:
    """A series of a study as Orthanc describes it, before any pixel is fetched."""

    orthanc_id: str
    summary: SeriesSummary
    manufacturer: str = ""
    #: typed DICOM attributes for rule conditions (node.study.attributes)
    attributes: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_node_output(self) -> bool:
        if self.manufacturer.strip() == MANUFACTURER:
            return True
        if self.summary.modality.upper() in NON_IMAGE_MODALITIES:
            return True
        return not is_image_sop_class(self.summary.sop_class_uid)


@dataclass(frozen=True)
class StudySummary:
    orthanc_id: str
    study_instance_uid: str
    series: tuple[StudySeries, ...]
    #: typed study and patient attributes for rule conditions
    attributes: Mapping[str, Any] = field(default_factory=dict)

    def input_series(self) -> list[StudySeries]:
        """Series that may feed a pipeline: everything but the node's own output."""
        return [series for series in self.series if not series.is_node_output]

    def rule_view(self) -> StudyAttributes:
        """The study as rule conditions see it: its input series only (the loop guard comes
        first), each keyed by its Orthanc id."""
        return StudyAttributes(
            attributes=dict(self.attributes),
            series=tuple(
                SeriesAttributes(
                    key=series.orthanc_id,
                    attributes=dict(series.attributes),
                    instance_count=series.summary.instance_count,
                )
                for series in self.input_series()
            ),
        )

    def series_by_key(self, key: str) -> StudySeries:
        return next(series for series in self.series if series.orthanc_id == key)


def is_image_sop_class(sop_class_uid: str | None) -> bool:
    """Whether a SOP Class is an image storage class (PS3.4 Annex B.5)."""
    if not sop_class_uid:
        # Orthanc always records the SOP Class; an unknown one is treated as not an image.
        return False
    from pydicom.uid import UID  # deferred: pydicom is only needed for the name table

    return "Image Storage" in UID(sop_class_uid).name
