"""The CT tissue pipeline on synthetic phantoms with exact answers, and on a real head CT."""

from __future__ import annotations

import plistlib
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from node.errors import InputSeriesError
from node.imaging.volume import Volume
from node.run.execution import run_pipeline
from pipelines.ct_tissue import CtTissueSegmentation
from tests.requirements import require_or_skip

AIR, WATER, BONE_HU = -1000.0, 0.0, 1000.0

#: Debian package invesalius-examples: an InVesalius 3 project (a tar.gz) of a head CT
CRANIUM = Path("/usr/share/doc/invesalius-examples/examples/Cranium.inv3")


def make_volume(
    hu: np.ndarray,
    *,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    modality="CT",
) -> Volume:
    """An axial volume (slices towards the head, rows towards posterior, columns to left)."""
    return Volume(
        array=hu.astype(np.float32),
        spacing=spacing,
        origin=(0.0, 0.0, 0.0),
        row_direction=(1.0, 0.0, 0.0),
        column_direction=(0.0, 1.0, 0.0),
        slice_direction=(0.0, 0.0, 1.0),
        modality=modality,
        series_instance_uid="1.2.826.0.1.3680043.8.498.1",
        frame_of_reference_uid="1.2.826.0.1.3680043.8.498.2",
        source_instance_uids=tuple(f"1.2.826.0.1.3680043.8.498.3.{k}" for k in range(len(hu))),
    )


def run(hu: np.ndarray) -> dict[str, np.ndarray]:
    return dict(CtTissueSegmentation().run(make_volume(hu)).masks)


# --- synthetic phantom: a water cylinder in air, an air bubble and a bone rod inside ----------

SHAPE = (20, 64, 64)
SLICE, ROW, COLUMN = np.indices(SHAPE)
CYLINDER = ((ROW - 32) ** 2 + (COLUMN - 32) ** 2 <= 20**2) & (SLICE >= 2) & (SLICE <= 17)
BUBBLE = (SLICE - 10) ** 2 + (ROW - 32) ** 2 + (COLUMN - 32) ** 2 <= 4**2
ROD = (ROW >= 30) & (ROW <= 32) & (COLUMN >= 42) & (COLUMN <= 44) & (SLICE >= 4) & (SLICE <= 15)


def phantom() -> np.ndarray:
    hu = np.full(SHAPE, AIR)
    hu[CYLINDER] = WATER
    hu[BUBBLE] = AIR
    hu[ROD] = BONE_HU
    return hu


def test_result_has_one_boolean_mask_per_segment_on_the_input_grid():
    masks = run(phantom())

    assert list(masks) == [s.label for s in CtTissueSegmentation.segments]
    assert all(m.dtype == bool and m.shape == SHAPE for m in masks.values())


def test_body_is_the_cylinder_with_its_air_bubble_filled():
    assert np.array_equal(run(phantom())["Body"], CYLINDER)


def test_bone_is_the_rod():
    assert np.array_equal(run(phantom())["Bone"], ROD)


def test_enclosed_air_bubble_is_internal_air():
    assert np.array_equal(run(phantom())["Internal air"], BUBBLE)


def test_air_open_to_the_outside_through_a_channel_is_not_internal():
    hu = phantom()
    # a "nostril" from the bubble up through the top of the cylinder
    hu[10:18, 32, 32] = AIR

    masks = run(hu)

    assert not masks["Internal air"].any()
    # bubble and channel are enclosed within each slice, so the body still holds them
    assert masks["Body"][BUBBLE].all()


def test_air_meeting_the_outside_only_across_a_voxel_edge_is_internal():
    hu = np.full(SHAPE, AIR)
    hu[2:18, 10:51, 10:51] = WATER
    hu[10, 10, 10] = AIR  # a notch in the box's edge, open to the outside
    hu[10, 11, 11] = AIR  # a pocket diagonal to the notch, walled off on all six faces
    pocket = np.zeros(SHAPE, dtype=bool)
    pocket[10, 11, 11] = True

    assert np.array_equal(run(hu)["Internal air"], pocket)


def test_airway_leaving_through_the_last_slice_is_internal():
    hu = np.full(SHAPE, AIR)
    column = (ROW - 32) ** 2 + (COLUMN - 32) ** 2 <= 20**2  # the body runs through every slice
    hu[column] = WATER
    airway = BUBBLE | ((ROW == 32) & (COLUMN == 32) & (SLICE >= 10))
    hu[airway] = AIR

    assert np.array_equal(run(hu)["Internal air"], airway)


def test_dense_object_apart_from_the_body_is_neither_body_nor_bone():
    hu = phantom()
    hu[2:18, 55:59, 20:45] = 500.0  # a head rest, separated from the body by air

    masks = run(hu)

    assert np.array_equal(masks["Body"], CYLINDER)
    assert np.array_equal(masks["Bone"], ROD)


def test_volume_without_tissue_gives_empty_masks():
    masks = run(np.full(SHAPE, AIR))

    assert not any(m.any() for m in masks.values())


def test_mr_volume_is_refused():
    with pytest.raises(InputSeriesError, match="needs a CT volume.*Modality 'MR'"):
        CtTissueSegmentation().run(make_volume(phantom(), modality="MR"))


# --- the real head CT -------------------------------------------------------------------------


def read_cranium() -> tuple[np.ndarray, tuple[float, float, float], np.ndarray]:
    """HU array (k, i, j), spacing (k, i, j) and InVesalius's own bone mask from Cranium.inv3.

    The project holds ``matrix.dat`` (raw int16 HU, shape from ``main.plist``) and
    ``mask_0.dat``, InVesalius's "Bone" preset mask (226 to 3071 HU) as uint8 with one extra
    leading slice, row and column of bookkeeping. Spacing in the plist is (x, y, z).
    """
    with tarfile.open(CRANIUM) as tar:
        members = {Path(m.name).name: m for m in tar.getmembers()}

        def read(name: str) -> bytes:
            handle = tar.extractfile(members[name])
            assert handle is not None
            return handle.read()

        main = plistlib.loads(read("main.plist"))
        shape = tuple(main["matrix"]["shape"])
        hu = np.frombuffer(read("matrix.dat"), dtype="<i2").reshape(shape)
        padded = tuple(n + 1 for n in shape)
        bone_mask = np.frombuffer(read("mask_0.dat"), dtype=np.uint8).reshape(padded)
    x, y, z = main["spacing"]
    return hu.astype(np.float32), (z, y, x), bone_mask[1:, 1:, 1:] >= 127


@pytest.fixture(scope="module")
def cranium():
    require_or_skip(CRANIUM.is_file(), f"{CRANIUM} is missing (Debian package invesalius-examples)")
    hu, spacing, invesalius_bone = read_cranium()
    volume = make_volume(hu, spacing=spacing)
    started = time.perf_counter()
    masks = CtTissueSegmentation().run(volume).masks
    seconds = time.perf_counter() - started
    return volume, masks, seconds, invesalius_bone


def millilitres(mask: np.ndarray, volume: Volume) -> float:
    return float(mask.sum()) * volume.voxel_volume_ml


def test_real_ct_has_the_shape_and_spacing_of_the_sample(cranium):
    volume, *_ = cranium

    assert volume.shape == (108, 256, 256)
    assert volume.spacing == pytest.approx((1.5, 0.957, 0.957), abs=1e-3)


def test_real_ct_body_volume_is_that_of_a_head(cranium):
    # 162 mm from the maxilla to above the vertex; an adult head is about 3.5 to 4.5 L
    volume, masks, *_ = cranium

    assert 2800 < millilitres(masks["Body"], volume) < 3800  # measured 3248 mL


def test_real_ct_bone_volume_and_density_are_those_of_a_skull(cranium):
    volume, masks, *_ = cranium
    bone = masks["Bone"]

    assert 450 < millilitres(bone, volume) < 750  # measured 595 mL
    assert 700 < volume.array[bone].mean() < 1000  # measured 826 HU


def test_real_ct_bone_is_invesalius_bone_mask_without_the_head_holder(cranium):
    volume, masks, _, invesalius_bone = cranium

    assert np.array_equal(masks["Bone"], invesalius_bone & masks["Body"])
    holder = invesalius_bone & ~masks["Body"]
    assert millilitres(holder, volume) > 30  # measured 58 mL


def test_real_ct_internal_air_is_in_the_paranasal_region(cranium):
    volume, masks, *_ = cranium
    air = masks["Internal air"]
    lowest_40_percent = np.arange(volume.shape[0]) < 0.4 * volume.shape[0]

    # measured 5.6 mL, most of it one maxillary sinus
    assert 1 < millilitres(air, volume) < 20
    assert air[lowest_40_percent].sum() >= 0.9 * air.sum()


def test_real_ct_internal_air_never_touches_the_outside(cranium):
    volume, masks, *_ = cranium
    air, body = masks["Internal air"], masks["Body"]

    assert not (ndimage.binary_dilation(air) & ~body).any()
    assert (volume.array[air] < -400).all()


def test_real_ct_runs_in_well_under_a_few_seconds(cranium):
    *_, seconds, _ = cranium

    assert seconds < 5  # measured 0.5 s on 2 CPU cores


def test_through_run_pipeline_the_masks_are_the_ones_run_gives(cranium):
    """The node's way of running it (thread, deadline, checks) changes nothing."""
    volume, masks, *_ = cranium

    through_node = run_pipeline(CtTissueSegmentation(), volume, time_limit=300).masks

    assert through_node.keys() == masks.keys()
    for label, mask in masks.items():
        assert np.array_equal(through_node[label], mask)
