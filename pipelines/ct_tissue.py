"""Rule-based CT tissue segmentation: body, bone and internal air from Hounsfield units.

Three segments from fixed thresholds on the Hounsfield scale, where water is 0 HU and air
-1000 HU by definition (fat about -100, soft tissue +20 to +80, cancellous bone +300 to +400,
cortical bone +700 and above; Wikipedia "Hounsfield scale"; Buzug, *Computed Tomography*,
Springer 2008; Prokop, *Spiral and Multislice CT of the Body*, Thieme 2003):

``Body``
    The largest 26-connected component of voxels above :data:`BODY_THRESHOLD_HU` (-500 HU,
    halfway between air and water, where a voxel is half air and half tissue), with holes
    filled slice by slice. Filling puts enclosed air (sinuses, airway, lungs) inside the body.
``Bone``
    Body voxels at or above :data:`BONE_THRESHOLD_HU` (226 HU, the lower bound of the "Bone"
    threshold preset of InVesalius 3, ``invesalius/presets.py``: 226 to 3071 HU; it lies
    below cancellous bone and above unenhanced soft tissue and blood).
``Internal air``
    Body voxels below :data:`AIR_THRESHOLD_HU` (-400 HU: air, gas and aerated lung, whose
    parenchyma lies between about -950 and -550 HU) that are not 6-connected to the background,
    the complement of the filled body. Air open to the outside through nostrils, mouth or ear
    canals is therefore excluded. The two ends of the scanned range are not background: an
    airway that leaves the scan through its first or last slice stays internal.

Connectivity follows the usual digital-topology pairing of 26-connected objects with
6-connected background (and 8 with 4 within a slice, as ``binary_fill_holes`` does): air
that meets the background only across a voxel edge or corner is separated from it by a
tissue wall, not connected through it.

Known limits: iodinated contrast can lift vessels above 226 HU (they count as bone); metal
counts as bone; a head rest or table touching the body through material above -500 HU joins
the body.
"""

from __future__ import annotations

from typing import Final

import cc3d
import numpy as np
from scipy import ndimage

from node.errors import InputSeriesError
from node.imaging.volume import Volume
from node.pipeline.base import (
    Code,
    Measurement,
    Orientation,
    Pipeline,
    PipelineResult,
    SegmentSpec,
    SeriesCriteria,
)

#: voxels above this are tissue (halfway between air, -1000 HU, and water, 0 HU)
BODY_THRESHOLD_HU = -500.0
#: voxels below this are air, gas or aerated lung
AIR_THRESHOLD_HU = -400.0
#: voxels at or above this are bone (InVesalius 3 "Bone" preset, 226 to 3071 HU)
BONE_THRESHOLD_HU = 226.0

# Codes from PS3.16 (as tabulated in pydicom 3.0.2's CID tables): categories from CID 7150,
# types from CID 7192 (anatomical structures), CID 7191 (tissues), CID 7197 (body substances).
ANATOMICAL_STRUCTURE = Code("91723000", "SCT", "Anatomical Structure")
TISSUE = Code("85756007", "SCT", "Tissue")
BODY_SUBSTANCE = Code("91720002", "SCT", "Body Substance")
ENTIRE_BODY = Code("38266002", "SCT", "Entire body")
BONE = Code("3138006", "SCT", "Bone")
GAS = Code("74947009", "SCT", "Gas")

BODY = "Body"
BONE_LABEL = "Bone"
INTERNAL_AIR = "Internal air"

_FACE_CONNECTIVITY: Final = 6
_FULL_CONNECTIVITY: Final = 26


class CtTissueSegmentation(Pipeline):
    """Body, bone and internal air of a CT series by Hounsfield-unit thresholds."""

    name = "ct-tissue"
    version = "1.0.0"
    description = (
        "Body outline, bone and enclosed air of an axial CT series from Hounsfield-unit "
        "thresholds (-500, 226 and -400 HU) and connected components; no trained model."
    )
    accepts = SeriesCriteria(modalities=frozenset({"CT"}), min_slices=10, orientation=Orientation.AXIAL)
    segments = (
        SegmentSpec(
            label=BODY,
            category=ANATOMICAL_STRUCTURE,
            type=ENTIRE_BODY,
            rgb=(177, 122, 101),
            measurements=(Measurement.VOLUME,),
            description="Largest connected region above -500 HU, holes filled in each axial slice",
        ),
        SegmentSpec(
            label=BONE_LABEL,
            category=TISSUE,
            type=BONE,
            rgb=(241, 214, 145),
            measurements=(Measurement.VOLUME, Measurement.MEAN_INTENSITY),
            description="Body voxels at or above 226 HU",
        ),
        SegmentSpec(
            label=INTERNAL_AIR,
            category=BODY_SUBSTANCE,
            type=GAS,
            rgb=(70, 140, 230),
            measurements=(Measurement.VOLUME,),
            description="Body voxels below -400 HU not connected to the air around the body",
        ),
    )

    def run(self, volume: Volume) -> PipelineResult:
        if volume.modality != "CT":
            raise InputSeriesError(
                f"Pipeline '{self.name}' needs a CT volume in Hounsfield units; "
                f"series {volume.series_instance_uid} has Modality '{volume.modality}'."
            )
        hu = volume.array
        body = _body(hu)
        return PipelineResult(
            masks={
                BODY: body,
                BONE_LABEL: body & (hu >= BONE_THRESHOLD_HU),
                INTERNAL_AIR: _internal_air(hu, body),
            }
        )


def _body(hu: np.ndarray) -> np.ndarray:
    """The largest 26-connected tissue component, holes filled in each slice (axis 0)."""
    tissue = hu > BODY_THRESHOLD_HU
    largest = cc3d.largest_k(tissue, k=1, connectivity=_FULL_CONNECTIVITY) > 0
    filled = np.empty_like(largest)
    for k, plane in enumerate(largest):
        filled[k] = ndimage.binary_fill_holes(plane)
    return filled


def _internal_air(hu: np.ndarray, body: np.ndarray) -> np.ndarray:
    """Air inside ``body`` that no face-connected path of air links to the background."""
    background = ~body
    labels = cc3d.connected_components((hu < AIR_THRESHOLD_HU) | background, connectivity=_FACE_CONNECTIVITY)
    touches_background = np.zeros(int(labels.max()) + 1, dtype=bool)
    touches_background[labels[background]] = True
    touches_background[0] = True
    return ~touches_background[labels]
