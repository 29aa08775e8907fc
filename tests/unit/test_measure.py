"""Segment measurements (node.results.measure) and the checks on what a pipeline returned
(node.pipeline.voxels.SegmentVoxels), for masks and for label maps."""

from __future__ import annotations

import numpy as np
import pytest

from node.errors import PipelineError
from node.imaging.volume import Volume
from node.pipeline.base import Code, Measurement, PipelineResult, SegmentSpec
from node.pipeline.voxels import SegmentVoxels
from node.results.measure import SegmentMeasurements, measure_segments

SHAPE = (6, 10, 12)
SPACING = (2.5, 0.7, 0.9)  # anisotropic: a voxel is 1.575 mm³

TISSUE = Code("85756007", "SCT", "Tissue")
FAT = Code("55603005", "SCT", "Fat")
MUSCLE = Code("91727004", "SCT", "Muscle")

FAT_SPEC = SegmentSpec(
    label="fat",
    category=TISSUE,
    type=FAT,
    rgb=(230, 220, 70),
    measurements=(Measurement.VOLUME, Measurement.MEAN_INTENSITY),
)
MUSCLE_SPEC = SegmentSpec(label="muscle", category=TISSUE, type=MUSCLE, rgb=(190, 40, 40))
SEGMENTS = (FAT_SPEC, MUSCLE_SPEC)


def _volume() -> Volume:
    array = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE) - 200.0
    return Volume(
        array=array,
        spacing=SPACING,
        origin=(0.0, 0.0, 0.0),
        row_direction=(1.0, 0.0, 0.0),
        column_direction=(0.0, 1.0, 0.0),
        slice_direction=(0.0, 0.0, 1.0),
        modality="CT",
        series_instance_uid="1.2.3",
        frame_of_reference_uid="1.2.4",
        source_instance_uids=tuple(f"1.2.5.{k}" for k in range(SHAPE[0])),
    )


def _masks() -> dict[str, np.ndarray]:
    fat = np.zeros(SHAPE, dtype=bool)
    fat[1:4, 2:5, 3:9] = True  # 3 × 3 × 6 = 54 voxels
    muscle = np.zeros(SHAPE, dtype=bool)
    muscle[5, 0, 0] = True
    return {"fat": fat, "muscle": muscle}


def _measure(volume: Volume, result: PipelineResult, segments=SEGMENTS) -> list[SegmentMeasurements]:
    return measure_segments(volume, segments, SegmentVoxels.from_result(volume.shape, segments, result))


def _label_map() -> np.ndarray:
    label_map = np.zeros(SHAPE, dtype=np.uint8)
    for number, spec in enumerate(SEGMENTS, start=1):
        label_map[_masks()[spec.label]] = number
    return label_map


def test_volume_is_voxel_count_times_voxel_volume() -> None:
    fat = _measure(_volume(), PipelineResult(masks=_masks()))[0]

    assert fat.voxel_count == 54
    assert fat.volume_ml == pytest.approx(54 * 2.5 * 0.7 * 0.9 / 1000.0)


def test_mean_intensity_is_mean_of_volume_inside_mask() -> None:
    volume = _volume()
    masks = _masks()

    fat = _measure(volume, PipelineResult(masks=masks))[0]

    assert fat.mean_intensity == pytest.approx(float(volume.array[masks["fat"]].mean()))


def test_mean_intensity_is_none_when_segment_does_not_ask_for_it() -> None:
    muscle = _measure(_volume(), PipelineResult(masks=_masks()))[1]

    assert muscle.mean_intensity is None


def test_empty_mask_has_zero_volume_and_no_mean() -> None:
    masks = _masks()
    masks["fat"] = np.zeros(SHAPE, dtype=bool)

    fat = _measure(_volume(), PipelineResult(masks=masks))[0]

    assert (fat.voxel_count, fat.volume_ml, fat.mean_intensity) == (0, 0.0, None)


def test_segments_are_numbered_in_declaration_order() -> None:
    measured = _measure(_volume(), PipelineResult(masks=_masks()))

    assert [(m.segment_number, m.label) for m in measured] == [(1, "fat"), (2, "muscle")]


def test_integer_zero_one_masks_are_accepted_as_boolean() -> None:
    masks = {label: mask.astype(np.uint8) for label, mask in _masks().items()}

    checked = SegmentVoxels.from_result(SHAPE, SEGMENTS, PipelineResult(masks=masks)).masks

    assert checked is not None and all(mask.dtype == np.bool_ for mask in checked)
    assert np.array_equal(checked[0], _masks()["fat"])


def test_missing_segment_is_rejected() -> None:
    masks = _masks()
    del masks["muscle"]

    with pytest.raises(PipelineError, match="no mask for its declared segment 'muscle'"):
        _measure(_volume(), PipelineResult(masks=masks))


def test_undeclared_label_is_rejected() -> None:
    masks = {**_masks(), "bone": np.zeros(SHAPE, dtype=bool)}

    with pytest.raises(PipelineError, match=r"mask\(s\) for \['bone'\], which it does not declare"):
        _measure(_volume(), PipelineResult(masks=masks))


def test_mask_of_wrong_shape_is_rejected() -> None:
    masks = {**_masks(), "fat": np.zeros((6, 10, 11), dtype=bool)}

    with pytest.raises(
        PipelineError, match=r"'fat' has shape \(6, 10, 11\); the volume has shape \(6, 10, 12\)"
    ):
        _measure(_volume(), PipelineResult(masks=masks))


def test_probability_map_is_rejected_not_thresholded() -> None:
    masks = {**_masks(), "fat": np.full(SHAPE, 0.5, dtype=np.float32)}

    with pytest.raises(PipelineError, match="'fat' holds values other than 0 and 1"):
        _measure(_volume(), PipelineResult(masks=masks))


def test_duplicate_declared_labels_are_rejected() -> None:
    with pytest.raises(PipelineError, match=r"label\(s\) \['fat'\] more than once"):
        SegmentVoxels.from_result(SHAPE, (FAT_SPEC, FAT_SPEC), PipelineResult(masks=_masks()))


def test_a_label_map_measures_as_its_masks_do() -> None:
    volume = _volume()

    from_labels = _measure(volume, PipelineResult(label_map=_label_map()))

    assert from_labels == _measure(volume, PipelineResult(masks=_masks()))


def test_a_label_map_is_kept_as_one_small_array() -> None:
    voxels = SegmentVoxels.from_result(
        SHAPE, SEGMENTS, PipelineResult(label_map=_label_map().astype(np.int64))
    )

    assert voxels.masks is None and voxels.label_map is not None
    assert voxels.label_map.dtype == np.uint8


def test_voxels_per_slice_and_frames_follow_the_segments() -> None:
    for result in (PipelineResult(label_map=_label_map()), PipelineResult(masks=_masks())):
        voxels = SegmentVoxels.from_result(SHAPE, SEGMENTS, result)

        assert voxels.slice_counts[:, 0].tolist() == [0, 18, 18, 18, 0, 0]
        assert voxels.slice_counts[:, 1].tolist() == [0, 0, 0, 0, 0, 1]
        assert voxels.frames() == [(1, 1), (1, 2), (1, 3), (2, 5)]
        assert np.array_equal(voxels.plane(2, 1), _masks()["fat"][2])
        assert np.array_equal(voxels.planes(5, [1, 2]), np.stack([_masks()["fat"][5], _masks()["muscle"][5]]))


def test_a_label_value_beyond_the_segments_is_rejected() -> None:
    label_map = _label_map()
    label_map[0, 0, 0] = 3

    with pytest.raises(PipelineError, match="label map with value 3; it declares 2 segment"):
        SegmentVoxels.from_result(SHAPE, SEGMENTS, PipelineResult(label_map=label_map))


def test_a_label_map_and_masks_together_are_rejected() -> None:
    with pytest.raises(PipelineError, match="both masks and a label map"):
        SegmentVoxels.from_result(SHAPE, SEGMENTS, PipelineResult(masks=_masks(), label_map=_label_map()))
