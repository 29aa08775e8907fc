"""Which result objects a job writes (node.results.products), and that each one is valid."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import highdicom as hd
import numpy as np
import pydantic
import pydicom
import pytest
from pydicom.dataset import Dataset

from node.config import PipelineSettings, Settings
from node.errors import ConfigurationError
from node.imaging.series import build_volume
from node.imaging.volume import Volume
from node.pipeline.base import Code, Measurement, Pipeline, PipelineResult, SegmentSpec, SeriesCriteria
from node.pipeline.voxels import SegmentVoxels
from node.results.identity import ResultIdentity
from node.results.measure import measure_segments
from node.results.part10 import ResultObject
from node.results.products import ResultInputs, build_result_objects
from node.results.seg import DeviceInfo
from node.results.validate import require_valid
from node.support.timing import StageTimer
from tests.factories import make_series
from tests.pixelmed import pixelmed_available, validate_sr
from tests.requirements import require_or_skip

TISSUE = Code("85756007", "SCT", "Tissue")
JOB = uuid.UUID("12345678-1234-5678-1234-567812345678")


class TissuePipeline(Pipeline):
    name = "ct-tissue"
    version = "1.4.0"
    description = "test double: segments are given, not computed"
    accepts = SeriesCriteria(modalities=frozenset({"CT"}))
    segments = (
        SegmentSpec(
            label="fat",
            category=TISSUE,
            type=Code("55603005", "SCT", "Fat"),
            rgb=(230, 220, 70),
            measurements=(Measurement.VOLUME, Measurement.MEAN_INTENSITY),
        ),
        SegmentSpec(
            label="muscle", category=TISSUE, type=Code("91727004", "SCT", "Muscle"), rgb=(190, 40, 40)
        ),
    )

    def run(self, volume: Volume) -> PipelineResult:
        raise NotImplementedError("the tests hand the result over directly")


IDENTITY = ResultIdentity(JOB, datetime(2026, 12, 6, 9, 30, tzinfo=UTC))


def uid(purpose: str) -> str:
    """As the worker derives result UIDs from a job."""
    return IDENTITY.uid(purpose)


def _inputs(empty: bool = False) -> ResultInputs:
    shape, spacing = (4, 48, 48), (3.0, 0.75, 0.75)
    stored = np.random.default_rng(3).integers(900, 1200, size=shape).astype(np.int16)
    datasets = make_series(stored, spacing=spacing)
    for ds in datasets:
        ds.BodyPartExamined = "ABDOMEN"
    volume = build_volume(datasets)
    masks = {s.label: np.zeros(shape, dtype=bool) for s in TissuePipeline.segments}
    if not empty:
        masks["fat"][1:3, 10:30, 5:25] = True
        masks["muscle"][2:4, 25:40, 20:45] = True
    output = PipelineResult(masks=masks)
    voxels = SegmentVoxels.from_result(shape, TissuePipeline.segments, output)
    return ResultInputs(
        source_images=datasets,
        volume=volume,
        pipeline=TissuePipeline(),
        output=output,
        voxels=voxels,
        measurements=measure_segments(volume, TissuePipeline.segments, voxels),
        device=DeviceInfo.for_node(device_serial_number="node-test-05"),
    )


def _build(kinds, inputs: ResultInputs | None = None, timer: StageTimer | None = None) -> list[ResultObject]:
    return build_result_objects(
        inputs or _inputs(), kinds=kinds, identity=IDENTITY, timer=timer or StageTimer()
    )


def test_default_results_are_seg_and_sr() -> None:
    # the SR carries the outlines OHIF draws, so a planar SR beside it would show them twice
    kinds = PipelineSettings().results

    objects = _build(kinds)

    assert kinds == ["seg", "sr"]
    assert [obj.kind.label for obj in objects] == ["SEG", "SR"]
    assert [obj.dataset.Modality for obj in objects] == ["SEG", "SR"]
    assert len({obj.dataset.SeriesInstanceUID for obj in objects}) == 2


def test_settings_choose_the_results_per_pipeline() -> None:
    settings = Settings.model_validate(
        {"pipeline_settings": {"ct-tissue": {"results": ["seg", "secondary-capture"]}}}
    )

    objects = _build(settings.for_pipeline("ct-tissue").results)

    assert [obj.kind.label for obj in objects] == ["SEG"] + ["SECONDARY-CAPTURE"] * 4
    assert settings.for_pipeline("brain-extraction").results == ["seg", "sr"]


def test_unknown_result_kind_fails_when_the_settings_are_read() -> None:
    with pytest.raises(pydantic.ValidationError, match="results.1"):
        PipelineSettings.model_validate({"results": ["seg", "pdf"]})


def test_secondary_capture_is_one_image_per_slice_with_uids_from_the_job() -> None:
    objects = _build(["secondary-capture"])

    assert [obj.dataset.SOPInstanceUID for obj in objects] == [uid(f"sc-instance-{k}") for k in range(4)]
    assert {obj.dataset.SeriesInstanceUID for obj in objects} == {uid("sc-series")}
    assert [obj.dataset.SeriesNumber for obj in objects] == [9904] * 4


def test_every_object_has_the_uids_of_its_purpose() -> None:
    objects = {obj.kind.label: obj.dataset for obj in _build(["seg", "sr", "planar-sr"])}

    for kind, purpose in (("SEG", "seg"), ("SR", "sr"), ("PLANAR-SR", "planar-sr")):
        assert objects[kind].SeriesInstanceUID == uid(f"{purpose}-series")
        assert objects[kind].SOPInstanceUID == uid(f"{purpose}-instance")
    assert [objects[k].SeriesNumber for k in ("SEG", "SR", "PLANAR-SR")] == [9901, 9902, 9903]


def test_planar_sr_alone_names_the_findings_as_the_seg_would() -> None:
    alone = _build(["planar-sr"])
    with_seg = {obj.kind.label: obj.dataset for obj in _build(["seg", "planar-sr"])}

    assert [obj.kind.label for obj in alone] == ["PLANAR-SR"]
    groups = hd.sr.MeasurementReport.from_sequence(
        hd.sr.Comprehensive3DSR.from_dataset(alone[0].dataset).content
    ).get_planar_roi_measurement_groups()
    assert [g.tracking_uid for g in groups] == [s.TrackingUID for s in with_seg["SEG"].SegmentSequence]


def test_both_srs_are_left_out_when_every_segment_is_empty() -> None:
    objects = _build(["seg", "sr", "planar-sr"], inputs=_inputs(empty=True))

    assert [obj.kind.label for obj in objects] == ["SEG"]


def test_sr_without_seg_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="result 'sr' references the SEG's segments: list 'seg' too"):
        _build(["sr", "planar-sr"])


def test_no_result_at_all_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="results lists no result object"):
        _build([])


def test_each_object_is_timed_as_its_own_stage() -> None:
    timer = StageTimer()

    _build(["seg", "sr", "planar-sr", "secondary-capture"], timer=timer)

    assert set(timer.seconds) == {"outlines", "seg", "sr", "planar-sr", "secondary-capture"}


def _write_and_read(dataset: Dataset, path: Path) -> Dataset:
    dataset.save_as(path, enforce_file_format=True)
    return pydicom.dcmread(path)


def test_every_object_round_trips_and_dciodvfy_finds_no_errors(tmp_path: Path) -> None:
    inputs = _inputs()

    objects = _build(["seg", "sr", "planar-sr", "secondary-capture"], inputs=inputs)

    for number, obj in enumerate(objects):
        path = tmp_path / f"{number}.dcm"
        read = _write_and_read(obj.dataset, path)
        assert read.SOPInstanceUID == obj.dataset.SOPInstanceUID
        assert read.StudyInstanceUID == inputs.source_images[0].StudyInstanceUID
        if obj.kind.label == "SEG":
            assert hd.seg.segread(path).number_of_segments == 2
        elif obj.kind.label == "SR":
            report = hd.sr.MeasurementReport.from_sequence(hd.sr.srread(path).content)
            assert len(report.get_volumetric_roi_measurement_groups()) == 2
        elif obj.kind.label == "PLANAR-SR":
            report = hd.sr.MeasurementReport.from_sequence(hd.sr.srread(path).content)
            assert len(report.get_planar_roi_measurement_groups()) == 2
        else:
            assert read.pixel_array.shape == (48, 48, 3)
        validation = require_valid(read, obj.kind.label)
        assert (validation.errors, validation.warnings) == ((), ()), obj.kind.label


@pytest.mark.parametrize(
    "kind",
    [
        "SR",
        "PLANAR-SR",
    ],
)
def test_pixelmed_finds_no_errors_in_either_sr(kind: str, tmp_path: Path) -> None:
    require_or_skip(pixelmed_available(), "PixelMed's SR validator needs Debian pixelmed-apps and java")
    sr = next(obj.dataset for obj in _build(["seg", "sr", "planar-sr"]) if obj.kind.label == kind)
    sr.save_as(tmp_path / "sr.dcm", enforce_file_format=True)

    report = validate_sr(tmp_path / "sr.dcm")

    assert report.errors == (), report.output
    if kind == "PLANAR-SR":
        # PixelMed 20220618's TID 1410 predates its Finding Category row; nothing else is reported.
        assert report.warnings
        assert all(
            '(276214006,SCT,"Finding category"): Content Item not in template' in w for w in report.warnings
        )
