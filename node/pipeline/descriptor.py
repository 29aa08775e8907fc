"""Descriptor files: what the node needs to know about a model file it did not write.

A TorchScript file or a MONAI bundle holds a network, not DICOM knowledge: which series it is
for, which SNOMED CT codes and colours its labels get, how to feed it. A descriptor (YAML or
JSON, unknown keys rejected) says that; :func:`read_descriptor` reads and validates one, and
the adapters in :mod:`node.pipeline.torchscript` and :mod:`node.pipeline.monai_bundle` turn it into a
:class:`~node.pipeline.base.Pipeline` class. docs/pipelines.md shows complete examples.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from node.errors import PipelineError
from node.pipeline.base import (
    Code,
    DeviceKind,
    InputSpec,
    IntensityWindow,
    IntensityZScore,
    Measurement,
    Orientation,
    SegmentSpec,
    SeriesCriteria,
)

Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CodeEntry(_Strict):
    """A coded concept: ``{value: "3138006", scheme: SCT, meaning: Bone}``."""

    value: str = Field(min_length=1)
    scheme: str = Field(min_length=1)
    meaning: str = Field(min_length=1)

    def code(self) -> Code:
        return Code(self.value, self.scheme, self.meaning)


class SegmentEntry(_Strict):
    """One segment: the model's label value (or output channel) and how the SEG names it."""

    #: the label value the model gives this segment (softmax: the channel's index;
    #: sigmoid: the output channel)
    index: int = Field(ge=0)
    #: Segment Label; for a bundle, default: its label name in metadata.json ``channel_def``
    label: str | None = Field(default=None, min_length=1, max_length=64)
    category: CodeEntry
    type: CodeEntry
    rgb: tuple[int, int, int]
    measurements: list[Literal["volume", "mean"]] = ["volume"]
    description: str = ""

    @model_validator(mode="after")
    def _colour(self) -> SegmentEntry:
        if not all(0 <= c <= 255 for c in self.rgb):
            raise ValueError(f"rgb {list(self.rgb)} must be three integers from 0 to 255")
        return self

    def spec(self, label: str) -> SegmentSpec:
        return SegmentSpec(
            label=label,
            category=self.category.code(),
            type=self.type.code(),
            rgb=self.rgb,
            measurements=tuple(Measurement(m) for m in self.measurements),
            description=self.description,
        )


class AcceptsEntry(_Strict):
    """The series a model is for (:class:`~node.pipeline.base.SeriesCriteria`)."""

    modalities: list[str] = Field(min_length=1)
    min_slices: int = Field(default=1, ge=1)
    orientation: Literal["axial", "any"] = "any"
    body_parts: list[str] = []
    slice_thickness_mm: tuple[float, float] | None = None

    def criteria(self) -> SeriesCriteria:
        try:
            return SeriesCriteria(
                modalities=frozenset(self.modalities),
                min_slices=self.min_slices,
                orientation=Orientation(self.orientation),
                body_parts=frozenset(self.body_parts),
                slice_thickness_mm=self.slice_thickness_mm,
            )
        except ValueError as error:
            raise PipelineError(str(error)) from error


class WindowEntry(_Strict):
    type: Literal["window"]
    lower: float
    upper: float
    out_min: float = 0.0
    out_max: float = 1.0


class ZScoreEntry(_Strict):
    type: Literal["zscore"]
    nonzero: bool = False


class InputEntry(_Strict):
    """The grid a TorchScript model wants (:class:`~node.pipeline.base.InputSpec`)."""

    orientation: str | None = None
    spacing: tuple[Positive, Positive, Positive] | None = None
    intensity: Annotated[WindowEntry | ZScoreEntry, Field(discriminator="type")] | None = None

    def spec(self) -> InputSpec:
        intensity: IntensityWindow | IntensityZScore | None = None
        if isinstance(self.intensity, WindowEntry):
            intensity = IntensityWindow(
                self.intensity.lower, self.intensity.upper, self.intensity.out_min, self.intensity.out_max
            )
        elif isinstance(self.intensity, ZScoreEntry):
            intensity = IntensityZScore(nonzero=self.intensity.nonzero)
        return InputSpec(orientation=self.orientation, spacing=self.spacing, intensity=intensity)


class InferenceEntry(_Strict):
    """How a TorchScript model is applied."""

    #: sliding-window size in voxels of the model grid; omit to run on the whole volume at once
    roi_size: tuple[int, int, int] | None = None
    sw_batch_size: int = Field(default=1, ge=1)
    overlap: float = Field(default=0.25, ge=0, lt=1)
    #: ``softmax``: one label per voxel, the channel with the highest score (channel 0 is
    #: background); ``sigmoid``: one independent channel per segment, on where its logit > 0;
    #: ``labels``: the model returns the label of each voxel itself, one channel of integers
    activation: Literal["softmax", "sigmoid", "labels"] = "softmax"

    @model_validator(mode="after")
    def _roi(self) -> InferenceEntry:
        if self.roi_size is not None and not all(n >= 1 for n in self.roi_size):
            raise ValueError(f"roi_size {list(self.roi_size)} must be three positive voxel counts")
        if self.activation == "labels" and self.roi_size is not None and self.overlap != 0:
            raise ValueError(
                f"overlap is {self.overlap:g}, but labels cannot be blended where windows overlap: "
                "a model that returns labels runs on windows laid edge to edge (overlap: 0)"
            )
        return self


class _Descriptor(_Strict):
    name: str
    description: str = ""
    accepts: AcceptsEntry
    segments: list[SegmentEntry] = Field(min_length=1)
    #: devices the model can run on
    devices: list[Literal["cpu", "cuda"]] = ["cpu", "cuda"]
    #: whether the model tolerates automatic mixed precision on CUDA
    amp: bool = True

    @model_validator(mode="after")
    def _unique(self) -> _Descriptor:
        indices = [s.index for s in self.segments]
        if len(set(indices)) != len(indices):
            raise ValueError(f"segments: index values {indices} must be unique")
        if not self.devices:
            raise ValueError("devices must name cpu, cuda or both")
        return self

    def device_kinds(self) -> frozenset[DeviceKind]:
        return frozenset(DeviceKind(d) for d in self.devices)


class TorchScriptDescriptor(_Descriptor):
    """The descriptor of a TorchScript model (``type: torchscript`` under ``models:``)."""

    version: str = Field(min_length=1)
    #: the TorchScript file, relative to the descriptor
    model: str | None = None
    input: InputEntry = InputEntry()
    inference: InferenceEntry = InferenceEntry()

    @model_validator(mode="after")
    def _background(self) -> TorchScriptDescriptor:
        if self.inference.activation == "softmax" and any(s.index == 0 for s in self.segments):
            raise ValueError("with activation softmax, index 0 is the background; segments start at 1")
        if any(s.label is None for s in self.segments):
            raise ValueError("every segment needs a label")
        return self


class MonaiBundleDescriptor(_Descriptor):
    """The node's descriptor of a MONAI bundle (``type: monai-bundle`` under ``models:``)."""

    #: default: ``version`` of the bundle's configs/metadata.json
    version: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _background(self) -> MonaiBundleDescriptor:
        if any(s.index == 0 for s in self.segments):
            raise ValueError("label value 0 is the background; segments start at 1")
        return self


D = TypeVar("D", bound=_Descriptor)


def read_descriptor(path: Path, kind: type[D], *, name: str) -> D:
    """Read and validate the descriptor at ``path`` for the model configured as ``name``."""
    data = read_mapping(path, what="descriptor")
    try:
        descriptor = kind.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in error.errors()
        )
        raise PipelineError(f"Model '{name}': descriptor {path} is invalid: {problems}") from error
    if descriptor.name != name:
        raise PipelineError(
            f"Model '{name}': descriptor {path} names the pipeline '{descriptor.name}'; the "
            "configuration's name and the descriptor's must be equal."
        )
    return descriptor


def read_mapping(path: Path, *, what: str) -> dict[str, Any]:
    """A JSON or YAML file holding a mapping (``.json`` is read as JSON, anything else as YAML)."""
    try:
        text = path.read_text()
    except OSError as error:
        raise PipelineError(f"The {what} {path} cannot be read: {error.strerror or error}.") from error
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise PipelineError(
            f"The {what} {path} is not valid {path.suffix == '.json' and 'JSON' or 'YAML'}: {error}"
        ) from error
    if not isinstance(data, dict):
        raise PipelineError(f"The {what} {path} must hold a mapping, not {type(data).__name__}.")
    return data


def file_checksum(path: Path) -> str:
    """``sha256:<hex>`` of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
    except OSError as error:
        raise PipelineError(f"The model weights {path} cannot be read: {error.strerror or error}.") from error
    return f"sha256:{digest.hexdigest()}"


def versioned(version: str, checksum: str) -> str:
    """``version`` with the first 12 hex digits of the weights' checksum, so that new weights
    under an unchanged version still make new jobs (the job table keys on the version)."""
    short = checksum.partition(":")[2][:12]
    return f"{version}{'.' if '+' in version else '+'}sha256.{short}"
