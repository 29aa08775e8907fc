"""Summarising a stored study from Orthanc's REST API, without reading any pixel data."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from node.study.attributes import from_orthanc_tags
from node.study.series import SeriesSummary
from node.study.summary import StudySeries, StudySummary

GetJson = Callable[[str], Any]


def summarize_study(get_json: GetJson, study_id: str) -> StudySummary:
    """What routing needs to know about a study: its series, their modality, size, geometry.

    Three requests per series: the series, its instances' main DICOM tags (Orthanc keeps
    ImageOrientationPatient there), and one instance's metadata for the SOP Class UID. The
    series' orientation is the one most of its instances have: a series with slices in two
    orientations still routes by what it mostly is, and its job then fails with the reason.
    """
    study = get_json(f"/studies/{study_id}")
    series = tuple(_summarize_series(get_json, series_id) for series_id in study.get("Series", []))
    return StudySummary(
        orthanc_id=study_id,
        study_instance_uid=study["MainDicomTags"].get("StudyInstanceUID", ""),
        series=tuple(s for s in series if s is not None),
        attributes=from_orthanc_tags(
            {**study.get("PatientMainDicomTags", {}), **study.get("MainDicomTags", {})}
        ),
    )


def _summarize_series(get_json: GetJson, series_id: str) -> StudySeries | None:
    series = get_json(f"/series/{series_id}")
    instance_ids = series.get("Instances", [])
    if not instance_ids:
        return None
    tags = series.get("MainDicomTags", {})
    instances = get_json(f"/series/{series_id}/instances")
    orientations = Counter(
        _floats(instance.get("MainDicomTags", {}).get("ImageOrientationPatient")) for instance in instances
    )
    metadata = get_json(f"/instances/{instance_ids[0]}/metadata?expand")
    # Slice Thickness is not one of Orthanc's main DICOM tags: read it from one instance.
    first_tags = get_json(f"/instances/{instance_ids[0]}/simplified-tags")
    summary = SeriesSummary(
        series_instance_uid=tags.get("SeriesInstanceUID", ""),
        modality=tags.get("Modality", ""),
        instance_count=len(instance_ids),
        image_orientation=orientations.most_common(1)[0][0],
        sop_class_uid=metadata.get("SopClassUid"),
        series_description=tags.get("SeriesDescription", ""),
        series_number=_int(tags.get("SeriesNumber")),
        body_part=(tags.get("BodyPartExamined") or "").strip().upper() or None,
        slice_thickness_mm=_float(first_tags.get("SliceThickness") or tags.get("SliceThickness")),
    )
    return StudySeries(
        orthanc_id=series_id,
        summary=summary,
        manufacturer=tags.get("Manufacturer", ""),
        # What rule conditions see: one instance's header (the series' shared attributes, in
        # practice) under the series' main tags.
        attributes=from_orthanc_tags({**first_tags, **tags}),
    )


def _floats(value: Any) -> tuple[float, ...] | None:
    if not value:
        return None
    try:
        return tuple(float(part) for part in str(value).split("\\"))
    except ValueError:
        return None


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
