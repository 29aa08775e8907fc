"""From the series' grid to a pipeline's grid and back: orientation, spacing, intensities."""

from __future__ import annotations

import math

import numpy as np
import pytest

from node.imaging.volume import Volume
from node.pipeline.base import InputSpec, IntensityWindow, IntensityZScore
from node.run.resample import apply_intensity, to_model_space

#: 3 mm axial slices of 0.9 mm pixels, the shape of a routine chest or abdomen CT
ANISOTROPIC = (3.0, 0.9, 0.9)
#: what many CT models want
ISOTROPIC_15 = InputSpec(orientation="RAS", spacing=(1.5, 1.5, 1.5))


def make_volume(
    array: np.ndarray,
    spacing: tuple[float, float, float] = ANISOTROPIC,
    *,
    row: tuple[float, float, float] = (1.0, 0.0, 0.0),
    column: tuple[float, float, float] = (0.0, 1.0, 0.0),
    origin: tuple[float, float, float] = (-40.0, -30.0, 10.0),
) -> Volume:
    normal = np.cross(row, column)
    return Volume(
        array=array.astype(np.float32),
        spacing=spacing,
        origin=origin,
        row_direction=row,
        column_direction=column,
        slice_direction=(float(normal[0]), float(normal[1]), float(normal[2])),
        modality="CT",
        series_instance_uid="1.2.3",
        frame_of_reference_uid="1.2.3.4",
        source_instance_uids=tuple(f"1.2.3.{k}" for k in range(array.shape[0])),
    )


def centres(volume: Volume) -> np.ndarray:
    """LPS position of every voxel centre, shape (k, i, j, 3)."""
    index = np.stack(np.meshgrid(*[np.arange(n) for n in volume.shape], indexing="ij"), axis=-1)
    homogeneous = np.concatenate([index, np.ones((*volume.shape, 1))], axis=-1)
    return (homogeneous @ volume.affine().T)[..., :3]


def sphere(volume: Volume, centre: tuple[float, float, float], radius: float) -> np.ndarray:
    return np.linalg.norm(centres(volume) - np.asarray(centre), axis=-1) <= radius


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


@pytest.fixture(scope="module")
def anisotropic() -> Volume:
    return make_volume(np.zeros((20, 80, 90)))


def test_native_input_is_the_volume_itself_and_a_mask_comes_back_untouched(anisotropic):
    model, space = to_model_space(anisotropic, InputSpec())
    mask = np.random.default_rng(0).random(anisotropic.shape) > 0.5

    assert model is anisotropic
    assert np.array_equal(space.to_source(mask), mask)


def test_model_grid_has_the_requested_spacing_over_the_same_field_of_view(anisotropic):
    model, _ = to_model_space(anisotropic, ISOTROPIC_15)

    assert model.spacing == (1.5, 1.5, 1.5)
    # RAS: axis 0 from the columns (0.9 mm × 90), axis 1 from the rows (× 80), axis 2 slices (3 × 20)
    assert model.shape == (54, 48, 40)
    source_centre = centres(anisotropic).reshape(-1, 3).mean(axis=0)
    model_centre = centres(model).reshape(-1, 3).mean(axis=0)
    assert np.all(np.abs(model_centre - source_centre) <= 0.75 + 1e-6)  # half a model voxel


def test_with_an_integer_ratio_source_slices_sit_on_model_voxel_centres(anisotropic):
    """3 mm slices, 1.5 mm model: every slice's plane is a plane of model voxel centres, so no
    source voxel is a tie between two model voxels (which would shift masks by 0.75 mm)."""
    model, _ = to_model_space(anisotropic, ISOTROPIC_15)
    slice_heights = centres(anisotropic)[:, 0, 0, 2]
    model_heights = centres(model)[0, 0, :, 2]

    distance = np.abs(slice_heights[:, None] - model_heights[None, :]).min(axis=1)

    assert np.allclose(distance, 0.0, atol=1e-6)


def test_round_trip_keeps_a_mask_aligned_with_the_source_voxels(anisotropic):
    """A model at 1.5 mm isotropic segments a sphere; back on the 0.9 × 0.9 × 3 mm series the
    mask covers the sphere's source voxels, differing only within a model voxel of its surface."""
    centre, radius = (-1.3, 4.2, 38.0), 14.0
    model, space = to_model_space(anisotropic, ISOTROPIC_15)
    found_by_model = sphere(model, centre, radius)

    back = space.to_source(found_by_model)

    truth = sphere(anisotropic, centre, radius)
    assert back.shape == anisotropic.shape
    assert dice(back, truth) > 0.93
    distance = np.linalg.norm(centres(anisotropic) - np.asarray(centre), axis=-1)
    half_diagonal = math.sqrt(3) * 0.75
    assert np.all(np.abs(distance[back != truth] - radius) <= half_diagonal)
    shift = centres(anisotropic)[back].mean(axis=0) - centres(anisotropic)[truth].mean(axis=0)
    assert np.all(np.abs(shift) < 0.25)  # mm; far below a source voxel


def test_each_source_voxel_takes_the_model_voxel_around_its_centre(anisotropic):
    """Nearest neighbour, exactly: a model voxel's value lands on the source voxels whose centres
    lie within that voxel (half its spacing from its centre along every model axis)."""
    model, space = to_model_space(anisotropic, ISOTROPIC_15)
    source_voxel = (7, 41, 23)
    point = centres(anisotropic)[source_voxel]
    index = np.linalg.solve(model.affine(), np.append(point, 1.0))[:3]
    nearest = tuple(int(n) for n in np.rint(index))
    marked = np.zeros(model.shape, dtype=bool)
    marked[nearest] = True

    back = space.to_source(marked)

    assert back[source_voxel]
    axes = model.affine()[:3, :3] / np.asarray(model.spacing)  # unit vectors of the model axes
    along = (centres(anisotropic)[back] - centres(model)[nearest]) @ axes
    assert np.all(np.abs(along) <= 0.75 + 1e-6)


def test_ras_orientation_permutes_and_flips_an_axial_series(anisotropic):
    array = np.random.default_rng(1).random(anisotropic.shape).astype(np.float32)
    volume = make_volume(array)

    model, space = to_model_space(volume, InputSpec(orientation="RAS"))

    # LPS axial: columns run to the patient's left, rows posterior, slices superior
    assert np.array_equal(model.array, array.transpose(2, 1, 0)[::-1, ::-1, :])
    assert model.spacing == (0.9, 0.9, 3.0)
    assert np.allclose(model.affine()[:3, :3] @ np.ones(3), [-0.9, -0.9, 3.0])
    assert np.array_equal(space.to_source(model.array), array)


def test_every_voxel_keeps_its_position_when_only_the_orientation_changes():
    volume = make_volume(
        np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6),
        spacing=(2.0, 1.0, 1.5),
        row=(0.0, 1.0, 0.0),  # a sagittal series: columns posterior, rows down
        column=(0.0, 0.0, -1.0),
    )

    model, _ = to_model_space(volume, InputSpec(orientation="LPS"))

    source_positions = {
        float(v): p for v, p in zip(volume.array.ravel(), centres(volume).reshape(-1, 3), strict=True)
    }
    for value, position in zip(model.array.ravel(), centres(model).reshape(-1, 3), strict=True):
        assert np.allclose(source_positions[float(value)], position)
    assert model.row_direction == (0.0, 0.0, 1.0)  # axis 2 superior


def test_an_oblique_series_gets_the_closest_orientation_and_keeps_its_true_directions():
    tilt = math.radians(20)
    column = (0.0, math.cos(tilt), -math.sin(tilt))  # head tilted 20° about the left-right axis
    volume = make_volume(np.zeros((6, 7, 8)), spacing=(2.0, 1.0, 1.0), column=column)

    model, _ = to_model_space(volume, InputSpec(orientation="RAS"))

    assert model.shape == (8, 7, 6)
    assert np.allclose(model.column_direction, (0.0, -math.cos(tilt), math.sin(tilt)))
    assert np.allclose(centres(model)[0, 0, 0], centres(volume)[0, 6, 7])


def test_label_maps_come_back_by_nearest_neighbour_without_new_values(anisotropic):
    model, space = to_model_space(anisotropic, ISOTROPIC_15)
    labels = np.random.default_rng(2).integers(0, 4, size=model.shape).astype(np.uint8)

    back = space.to_source(labels)

    assert back.dtype == np.uint8
    assert set(np.unique(back)) <= {0, 1, 2, 3}


def test_a_result_off_the_model_grid_is_refused(anisotropic):
    _, space = to_model_space(anisotropic, ISOTROPIC_15)

    with pytest.raises(ValueError, match=r"not on the model grid \(54, 48, 40\)"):
        space.to_source(np.zeros(anisotropic.shape, dtype=bool))


def test_window_clips_and_scales_onto_zero_to_one():
    hu = np.array([-2000.0, -1000.0, 500.0, 2000.0, 3000.0], dtype=np.float32)

    scaled = apply_intensity(hu, IntensityWindow(-1000, 2000))

    assert np.allclose(scaled, [0.0, 0.0, 0.5, 1.0, 1.0])
    assert scaled.dtype == np.float32


def test_zscore_over_nonzero_voxels_leaves_zeros_alone():
    values = np.array([0.0, 2.0, 4.0, 6.0, 0.0], dtype=np.float32)

    normalised = apply_intensity(values, IntensityZScore(nonzero=True))

    assert normalised[0] == 0 and normalised[4] == 0
    assert np.isclose(normalised[1:4].mean(), 0.0)
    assert np.isclose(normalised[1:4].std(), 1.0)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (dict(orientation="RLS"), "one of each pair"),
        (dict(orientation="ras"), "one of each pair"),
        (dict(spacing=(1.5, 0.0, 1.5)), "three positive millimetre values"),
        (dict(intensity="window"), "IntensityWindow, an IntensityZScore or None"),
    ],
)
def test_input_spec_names_what_is_wrong(spec, message):
    with pytest.raises(ValueError, match=message):
        InputSpec(**spec)
