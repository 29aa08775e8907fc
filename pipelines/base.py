"""The contract between the node and a model pipeline.

A pipeline receives a :class:`~node.imaging.volume.Volume` and returns a
:class:`PipelineResult`: one boolean mask per declared segment, on the volume's own grid. The
node does all DICOM work around it (series choice, SEG and SR writing, measurements), so a
pipeline never imports pydicom or highdicom.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from node.imaging.volume import Volume


@dataclass(frozen=True)
class Code:
    """A coded concept (PS3.3 Table 8.8-1): Code Value, Coding Scheme Designator, Code Meaning."""

    value: str
    scheme: str
    meaning: str


class Orientation(enum.Enum):
    """The slice orientation a pipeline accepts."""

    AXIAL = "axial"
    ANY = "any"


class Measurement(enum.Enum):
    """Measurements the node computes for a segment and writes into the TID 1500 SR."""

    VOLUME = "volume"  # millilitres
    MEAN_INTENSITY = "mean"  # in the volume's units (Hounsfield units for CT)


@dataclass(frozen=True)
class SeriesCriteria:
    """What a series must be for a pipeline to run on it."""

    modalities: frozenset[str]
    min_slices: int = 1
    orientation: Orientation = Orientation.ANY


@dataclass(frozen=True)
class SegmentSpec:
    """A segment a pipeline produces, as it will appear in the SEG's Segment Sequence."""

    label: str
    #: Segmented Property Category Code Sequence (CID 7150), SNOMED CT
    category: Code
    #: Segmented Property Type Code Sequence (CID 7151), SNOMED CT
    type: Code
    #: display colour as sRGB 0-255; the node writes it as RecommendedDisplayCIELabValue
    rgb: tuple[int, int, int]
    measurements: tuple[Measurement, ...] = (Measurement.VOLUME,)
    description: str = ""


@dataclass(frozen=True, eq=False)
class PipelineResult:
    """What a pipeline returns: a boolean mask per segment label, on the input volume's grid."""

    masks: Mapping[str, np.ndarray] = field(default_factory=dict)


class Pipeline(ABC):
    """Base class of every pipeline.

    Subclasses set the class attributes and implement :meth:`run`. A worker creates one
    instance per pipeline, calls :meth:`load` once, and then :meth:`run` for every study, so
    weights loaded in :meth:`load` stay warm.
    """

    name: ClassVar[str]
    version: ClassVar[str]
    description: ClassVar[str]
    accepts: ClassVar[SeriesCriteria]
    segments: ClassVar[tuple[SegmentSpec, ...]]

    def load(self) -> None:  # noqa: B027 - optional hook, most rule-based pipelines need nothing
        """Load weights and other expensive state; called once per worker."""

    @abstractmethod
    def run(self, volume: Volume) -> PipelineResult:
        """Segment ``volume``; return one mask per segment of :attr:`segments`."""
