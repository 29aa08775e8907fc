"""Brain extraction of T1-weighted MR with deepbet (Fisch et al., 2024).

deepbet (https://github.com/wwu-mmll/deepbet, MIT licence) runs two 3D U-Nets shipped as
TorchScript inside its wheel: a coarse one on a 128³ resampling of the whole image finds the
head's bounding box, a fine one segments the box resampled to 256³; the result is kept to its
largest component with its holes filled. The mask covers the brain with the cerebrospinal fluid
around it up to the inner table of the skull (deepbet reports its volume as total intracranial
volume).

deepbet works on a NIfTI-style image in RAS orientation. :meth:`BrainExtraction.run` turns the
:class:`~node.imaging.volume.Volume` into an in-memory ``nibabel.Nifti1Image`` whose voxel axes
are the volume's own ``(k, i, j)`` and whose affine is the volume's LPS affine with x and y
negated (LPS to RAS); deepbet reorients that to the closest canonical RAS orientation, segments
it, and reorients the mask back, so the mask comes back on the input grid whatever the series'
orientation. Nothing is read from or written to disk (deepbet saves only to paths it is given).

torch, nibabel and deepbet are imported on first use, so listing pipelines (the registry, the
REST API) does not load them.
"""

from __future__ import annotations

import functools
import hashlib
import warnings
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from node.errors import InputSeriesError, PipelineError
from node.imaging.volume import Volume
from node.pipeline.base import (
    Code,
    DeviceKind,
    Measurement,
    Orientation,
    Pipeline,
    PipelineResult,
    SegmentSpec,
    SeriesCriteria,
)

if TYPE_CHECKING:
    from deepbet import BrainExtraction as DeepBet

#: the deepbet release whose weights this pipeline version stands for
DEEPBET_VERSION = "1.0.2"
#: deepbet's default probability threshold
MASK_THRESHOLD = 0.5

# PS3.16 CID 7150 (category) and CID 7192 / CID 7153 (type).
ANATOMICAL_STRUCTURE = Code("91723000", "SCT", "Anatomical Structure")
BRAIN = Code("12738006", "SCT", "Brain")

BRAIN_LABEL = "Brain"

#: LPS (DICOM patient coordinates) to RAS (NIfTI world coordinates): negate x and y
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


class BrainExtraction(Pipeline):
    """Brain mask of a T1-weighted MR volume by deepbet, on CPU or a CUDA GPU."""

    name = "brain-extraction"
    version = f"1.0.0+deepbet{DEEPBET_VERSION}"
    description = (
        "Brain (with surrounding CSF) of a T1-weighted MR series, segmented by the deepbet "
        "convolutional networks; any slice orientation."
    )
    accepts = SeriesCriteria(modalities=frozenset({"MR"}), min_slices=20, orientation=Orientation.ANY)
    # deepbet reorients the volume itself (closest canonical RAS), so it takes the series as is
    devices = frozenset({DeviceKind.CPU, DeviceKind.CUDA})
    #: deepbet's networks were validated in float32; mixed precision could move the mask
    amp = False
    segments = (
        SegmentSpec(
            label=BRAIN_LABEL,
            category=ANATOMICAL_STRUCTURE,
            type=BRAIN,
            rgb=(250, 250, 225),
            measurements=(Measurement.VOLUME,),
            description="Brain with surrounding CSF (deepbet brain mask)",
        ),
    )

    def __init__(self) -> None:
        self._model: DeepBet | None = None

    @classmethod
    def model_checksum(cls) -> str | None:
        """sha256 over deepbet's two TorchScript files (bbox_model.pt, then model.pt)."""
        return _deepbet_checksum()

    def load(self) -> None:
        """Load both deepbet networks onto ``self.runtime.device``."""
        try:
            installed = metadata.version("deepbet")
        except metadata.PackageNotFoundError as exc:
            raise PipelineError(
                f"Pipeline '{self.name}' {self.version} needs deepbet {DEEPBET_VERSION}, "
                "which is not installed."
            ) from exc
        if installed != DEEPBET_VERSION:
            raise PipelineError(
                f"Pipeline '{self.name}' {self.version} needs deepbet {DEEPBET_VERSION}; "
                f"deepbet {installed} is installed."
            )
        import torch
        from deepbet import BrainExtraction as DeepBet

        with warnings.catch_warnings():
            # deepbet 1.0.2 ships TorchScript files; torch 2.13 deprecates torch.jit.load
            warnings.filterwarnings(
                "ignore",
                message=r"`torch\.jit\.load` is deprecated",
                category=DeprecationWarning,
            )
            # on the CPU first, then onto the runtime's device: deepbet itself only knows "the
            # current CUDA device", not cuda:N
            model = DeepBet(no_gpu=True)
        if self.runtime.is_cuda:
            device = torch.device(self.runtime.device)
            model.model.to(device)
            model.bbox_model.to(device)
        self._model = model

    def run(self, volume: Volume) -> PipelineResult:
        if self._model is None:
            raise PipelineError(f"Pipeline '{self.name}' ran before load() was called.")
        if volume.modality != "MR":
            raise InputSeriesError(
                f"Pipeline '{self.name}' needs an MR volume; series "
                f"{volume.series_instance_uid} has Modality '{volume.modality}'."
            )
        if not np.ptp(volume.array) > 0:
            raise InputSeriesError(
                f"Series {volume.series_instance_uid} has the same value in every voxel; "
                "there is no head to find."
            )
        import nibabel as nib
        import torch

        image = nib.Nifti1Image(np.asarray(volume.array, dtype=np.float32), _LPS_TO_RAS @ volume.affine())
        try:
            with torch.inference_mode():
                _, mask_image, _ = self._model.run(image, threshold=MASK_THRESHOLD)
        except (AssertionError, ValueError) as exc:
            # deepbet asserts a foreground for its bounding box and fails on an empty mask
            raise PipelineError(
                f"deepbet found no brain in series {volume.series_instance_uid}: {exc}"
            ) from exc
        mask = np.asarray(mask_image.dataobj, dtype=bool)
        if mask.shape != volume.shape:
            raise PipelineError(
                f"deepbet returned a mask of shape {mask.shape} for a volume of shape {volume.shape}."
            )
        return PipelineResult(masks={BRAIN_LABEL: mask})


@functools.cache
def _deepbet_checksum() -> str | None:
    """Found through the installed distribution's file list, without importing deepbet."""
    try:
        files = sorted(
            (f for f in metadata.files("deepbet") or () if f.suffix == ".pt"), key=lambda f: f.name
        )
    except metadata.PackageNotFoundError:
        return None
    if not files:
        return None
    digest = hashlib.sha256()
    for file in files:
        digest.update(Path(file.locate()).read_bytes())
    return f"sha256:{digest.hexdigest()}"
