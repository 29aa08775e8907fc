"""The deepbet brain extraction pipeline on a real T1 (Colin27, from MRIcron's templates)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from node.errors import InputSeriesError, PipelineError
from node.imaging.volume import Volume
from node.pipeline.registry import PipelineRegistry
from node.run.execution import run_pipeline
from node.run.warm import WarmPipelines
from pipelines.brain_extraction import BrainExtraction
from tests.requirements import require_or_skip

#: Debian package mricron-data: the Colin27 T1 (an average of 27 scans of one adult) in MNI
#: space at 1 mm, and the same image skull-stripped as MRIcron ships it
CH2 = Path("/usr/share/mricron/templates/ch2.nii.gz")
CH2_BET = Path("/usr/share/mricron/templates/ch2bet.nii.gz")

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def axial_volume(image: nib.Nifti1Image) -> Volume:
    """``image`` as a DICOM-style axial series: slices inferior to superior, rows anterior to
    posterior, columns right to left (Image Orientation (Patient) 1\\0\\0\\0\\1\\0)."""
    to_lps_axes = nib.orientations.ornt_transform(
        nib.io_orientation(image.affine), nib.orientations.axcodes2ornt(("L", "P", "S"))
    )
    lps = image.as_reoriented(to_lps_axes)
    affine = _RAS_TO_LPS @ lps.affine  # voxel (x, y, z) to LPS millimetres
    steps = np.linalg.norm(affine[:3, :3], axis=0)
    directions = affine[:3, :3] / steps
    array = np.asarray(lps.dataobj, dtype=np.float32).transpose(2, 1, 0)  # (z, y, x)
    return Volume(
        array=np.ascontiguousarray(array),
        spacing=(float(steps[2]), float(steps[1]), float(steps[0])),
        origin=tuple(float(v) for v in affine[:3, 3]),
        row_direction=tuple(float(v) for v in directions[:, 0]),
        column_direction=tuple(float(v) for v in directions[:, 1]),
        slice_direction=tuple(float(v) for v in directions[:, 2]),
        modality="MR",
        series_instance_uid="1.2.826.0.1.3680043.8.498.10",
        frame_of_reference_uid="1.2.826.0.1.3680043.8.498.11",
        source_instance_uids=tuple(f"1.2.826.0.1.3680043.8.498.12.{k}" for k in range(array.shape[0])),
    )


def reindexed(volume: Volume, order: tuple[int, int, int], flip: tuple[bool, ...]) -> Volume:
    """The same image, its voxel axes taken in ``order`` and then reversed where ``flip``."""
    array = volume.array.transpose(order)
    steps = volume.affine()[:3, list(order)]
    first_voxel = np.zeros(3)
    for new_axis, old_axis in enumerate(order):
        if flip[new_axis]:
            array = np.flip(array, new_axis)
            steps[:, new_axis] *= -1
            first_voxel[old_axis] = volume.shape[old_axis] - 1
    spacing = tuple(volume.spacing[axis] for axis in order)
    directions = steps / np.asarray(spacing)
    origin = volume.affine() @ np.append(first_voxel, 1.0)
    return replace(
        volume,
        array=np.ascontiguousarray(array),
        spacing=spacing,
        origin=tuple(float(v) for v in origin[:3]),
        slice_direction=tuple(float(v) for v in directions[:, 0]),
        column_direction=tuple(float(v) for v in directions[:, 1]),
        row_direction=tuple(float(v) for v in directions[:, 2]),
        source_instance_uids=tuple(f"{volume.series_instance_uid}.{k}" for k in range(len(array))),
    )


def undo_reindexing(mask: np.ndarray, order: tuple[int, int, int], flip: tuple[bool, ...]):
    flipped_axes = tuple(axis for axis, f in enumerate(flip) if f)
    return np.flip(mask, flipped_axes).transpose(np.argsort(order))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


@pytest.fixture(scope="module")
def ch2() -> Volume:
    require_or_skip(CH2.is_file(), f"{CH2} is missing (Debian package mricron-data)")
    return axial_volume(nib.load(CH2))


@pytest.fixture(scope="module")
def warm() -> WarmPipelines:
    return WarmPipelines(PipelineRegistry([BrainExtraction]))


@pytest.fixture(scope="module")
def pipeline(warm) -> BrainExtraction:
    return warm.get("brain-extraction")


@pytest.fixture(scope="module")
def brain(pipeline, ch2) -> np.ndarray:
    return pipeline.run(ch2).masks["Brain"]


def test_axial_volume_maps_each_voxel_to_the_nifti_position_of_its_value(ch2):
    image = nib.load(CH2)
    data = np.asanyarray(image.dataobj)
    # three voxels as homogeneous (k, i, j, 1) columns
    index = np.array([[40, 100, 90, 1], [120, 30, 150, 1], [0, 0, 0, 1]]).T

    ras = np.linalg.inv(_RAS_TO_LPS) @ ch2.affine() @ index
    x, y, z = np.rint(np.linalg.inv(image.affine) @ ras)[:3].astype(int)

    assert ch2.slice_direction == (0.0, 0.0, 1.0)
    assert np.array_equal(ch2.array[tuple(index[:3])], data[x, y, z])


def test_mask_is_boolean_on_the_input_grid(ch2, brain):
    assert brain.dtype == bool
    assert brain.shape == ch2.shape


def test_brain_volume_is_that_of_colin27_in_mni_space(ch2, brain):
    # Colin27 is scaled to MNI305 space, larger than a native adult brain (1000-1600 mL), and
    # deepbet's mask includes the CSF around the brain: measured 1956 mL.
    assert 1600 < brain.sum() * ch2.voxel_volume_ml < 2200


def test_mask_agrees_with_the_bet_brain_shipped_with_the_template(ch2, brain):
    require_or_skip(CH2_BET.is_file(), f"{CH2_BET} is missing (Debian package mricron-data)")
    bet = axial_volume(nib.load(CH2_BET)).array > 0

    assert dice(brain, bet) > 0.9  # measured 0.936; deepbet keeps more of the outer CSF


def test_mask_lies_inside_the_head_around_its_centre(ch2, brain):
    head = ch2.array > 0.1 * ch2.array.max()
    centroid = np.argwhere(brain).mean(axis=0)
    head_centre = np.argwhere(head).mean(axis=0)

    assert (head[brain]).mean() > 0.95
    assert np.linalg.norm((centroid - head_centre) * ch2.spacing) < 25  # millimetres


@pytest.mark.parametrize(
    ("order", "flip"),
    [
        pytest.param((0, 1, 2), (True, False, False), id="slices-reversed"),
        pytest.param((2, 0, 1), (True, True, False), id="sagittal"),
    ],
)
def test_mask_follows_the_volume_when_its_voxels_are_ordered_differently(pipeline, ch2, brain, order, flip):
    volume = reindexed(ch2, order, flip)

    mask = pipeline.run(volume).masks["Brain"]

    assert mask.shape == volume.shape
    assert dice(undo_reindexing(mask, order, flip), brain) > 0.98


def test_pipeline_loads_once(warm, pipeline):
    assert warm.get("brain-extraction") is pipeline
    # measured 1.2 s on CPU with torch still to import, 0.3 s with torch imported
    assert warm.load_seconds("brain-extraction") < 30


def test_ct_volume_is_refused(pipeline, ch2):
    with pytest.raises(InputSeriesError, match="needs an MR volume.*Modality 'CT'"):
        pipeline.run(replace(ch2, modality="CT"))


def test_blank_volume_is_refused(pipeline, ch2):
    with pytest.raises(InputSeriesError, match="same value in every voxel"):
        pipeline.run(replace(ch2, array=np.zeros_like(ch2.array)))


def test_run_before_load_is_an_error(ch2):
    with pytest.raises(PipelineError, match="before load"):
        BrainExtraction().run(ch2)


def test_through_run_pipeline_the_mask_is_the_one_run_gives(pipeline, ch2, brain):
    """The node's way of running it (thread, deadline, inference mode, checks) changes nothing."""
    assert np.array_equal(run_pipeline(pipeline, ch2, time_limit=300).masks["Brain"], brain)
