"""Reading the node's SEG and SR back with dcmqi, an independent implementation (PS3.3 SEG, TID 1500)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from node.imaging.volume import Volume


def _tool(name: str) -> str:
    return str(Path(sys.executable).parent / name)


@dataclass(frozen=True)
class DcmqiSegmentation:
    masks: dict[str, np.ndarray]  # label -> bool (k, i, j) on the volume grid
    colours: dict[str, tuple[int, ...]]  # label -> recommendedDisplayRGBValue


def read_seg(seg_path: Path, volume: Volume, workdir: Path) -> DcmqiSegmentation:
    """`segimage2itkimage` the SEG, and map each segment back onto the source volume's grid.

    dcmqi writes one NIfTI per segment group, in RAS, cropped to the slices with frames.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            _tool("segimage2itkimage"),
            "--inputDICOM",
            str(seg_path),
            "--outputDirectory",
            str(workdir),
            "--outputType",
            "nifti",
        ],
        check=True,
        capture_output=True,
    )
    meta = json.loads((workdir / "meta.json").read_text())
    masks: dict[str, np.ndarray] = {}
    colours: dict[str, tuple[int, ...]] = {}
    for group_number, group in enumerate(meta["segmentAttributes"], start=1):
        image = nib.load(workdir / f"{group_number}.nii.gz")
        labels = np.asarray(image.dataobj)
        for attributes in group:
            label = attributes["SegmentLabel"]
            colours[label] = tuple(attributes["recommendedDisplayRGBValue"])
            on_grid = on_volume_grid(labels == attributes["labelID"], image.affine, volume)
            masks[label] = masks[label] | on_grid if label in masks else on_grid
    return DcmqiSegmentation(masks=masks, colours=colours)


def read_seg_masks(seg_path: Path, volume: Volume, workdir: Path) -> dict[str, np.ndarray]:
    return read_seg(seg_path, volume, workdir).masks


def on_volume_grid(mask: np.ndarray, ras_affine: np.ndarray, volume: Volume) -> np.ndarray:
    """Place a NIfTI mask (RAS world, x/y/z index order) onto the volume's (k, i, j) grid.

    Both grids are the same lattice; every NIfTI voxel must land exactly on a volume voxel.
    """
    lps_from_ras = np.diag([-1.0, -1.0, 1.0, 1.0])
    index_from_nifti = np.linalg.inv(volume.affine()) @ lps_from_ras @ ras_affine
    ijk = np.indices(mask.shape).reshape(3, -1)
    kij = index_from_nifti @ np.vstack([ijk, np.ones(ijk.shape[1])])
    rounded = np.rint(kij[:3]).astype(int)
    assert np.allclose(kij[:3], rounded, atol=1e-3), "dcmqi's grid is not the volume's grid"
    assert (rounded >= 0).all() and (rounded < np.array(volume.shape)[:, None]).all()
    on_grid = np.zeros(volume.shape, dtype=bool)
    on_grid[tuple(rounded)] = mask.reshape(-1)
    return on_grid


def read_sr_metadata(sr_path: Path, json_path: Path) -> dict[str, Any]:
    """`tid1500reader` the SR into dcmqi's JSON."""
    subprocess.run(
        [_tool("tid1500reader"), "--inputDICOM", str(sr_path), "--outputMetadata", str(json_path)],
        check=True,
        capture_output=True,
    )
    metadata: dict[str, Any] = json.loads(json_path.read_text())
    return metadata


VOLUME_CODE = "118565006"  # SCT "Volume"


def read_sr_volumes(sr_path: Path, json_path: Path) -> dict[str, float]:
    """Tracking identifier -> volume (mL) of each volumetric measurement group (the one that
    references a SEG segment), as dcmqi reads them; the planar groups beside them are skipped."""
    volumes = {}
    for group in read_sr_metadata(sr_path, json_path)["Measurements"]:
        if "ReferencedSegment" not in group:
            continue
        item = next(i for i in group["measurementItems"] if i["quantity"]["CodeValue"] == VOLUME_CODE)
        volumes[group["TrackingIdentifier"]] = float(item["value"])
    return volumes
