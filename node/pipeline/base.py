"""The contract between the node and a model pipeline.

A pipeline declares what it accepts (:class:`SeriesCriteria`), the input it wants
(:class:`InputSpec`: orientation, spacing, intensity), what it produces (:class:`SegmentSpec`)
and who it is (name, version, model checksum). It receives a
:class:`~node.imaging.volume.Volume` and returns a :class:`PipelineResult`: one boolean mask
per declared segment, or one label volume, on the grid of the volume it was given. The node
does all the work around it: series choice, resampling to the pipeline's grid and back onto
the source grid, SEG and SR writing, measurements. A pipeline never imports pydicom or
highdicom.
"""

from __future__ import annotations

import enum
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from node.imaging.volume import Volume

# Part of the contract, so pipeline authors import them from here; they live with the series
# summaries they are matched against (routing needs them without the rest of the contract).
from node.study.criteria import Orientation as Orientation
from node.study.criteria import SeriesCriteria as SeriesCriteria


@dataclass(frozen=True)
class Code:
    """A coded concept (PS3.3 Table 8.8-1): Code Value, Coding Scheme Designator, Code Meaning."""

    value: str
    scheme: str
    meaning: str


class Measurement(enum.Enum):
    """Measurements the node computes for a segment and writes into the TID 1500 SR."""

    VOLUME = "volume"  # millilitres
    MEAN_INTENSITY = "mean"  # in the volume's units (Hounsfield units for CT)


# --------------------------------------------------------------------------------------------
# The input a pipeline wants
# --------------------------------------------------------------------------------------------

#: the direction each letter names, in DICOM patient coordinates (LPS: +x left, +y posterior,
#: +z head)
AXIS_LETTERS: Mapping[str, tuple[float, float, float]] = {
    "L": (1.0, 0.0, 0.0),
    "R": (-1.0, 0.0, 0.0),
    "P": (0.0, 1.0, 0.0),
    "A": (0.0, -1.0, 0.0),
    "S": (0.0, 0.0, 1.0),
    "I": (0.0, 0.0, -1.0),
}
_ORIENTATION_CODE = re.compile(r"[LRPAIS]{3}")


@dataclass(frozen=True)
class IntensityWindow:
    """Clip to ``[lower, upper]`` (volume units: HU for CT) and map that range linearly onto
    ``[out_min, out_max]`` (MONAI's ``ScaleIntensityRange`` with ``clip=True``)."""

    lower: float
    upper: float
    out_min: float = 0.0
    out_max: float = 1.0

    def __post_init__(self) -> None:
        values = (self.lower, self.upper, self.out_min, self.out_max)
        if not all(math.isfinite(v) for v in values) or not self.lower < self.upper:
            raise ValueError(
                f"IntensityWindow lower {self.lower!r} and upper {self.upper!r} must be finite with "
                "lower < upper"
            )


@dataclass(frozen=True)
class IntensityZScore:
    """Subtract the mean and divide by the standard deviation; over the non-zero voxels only
    when ``nonzero`` (zero voxels stay zero), as MONAI's ``NormalizeIntensity``."""

    nonzero: bool = False


@dataclass(frozen=True)
class InputSpec:
    """The grid and intensities a pipeline's :meth:`~Pipeline.run` receives.

    The default is the series as it is: the volume's own voxel order ``(k, i, j)``, its own
    spacing, its own values. Anything else and the node resamples before ``run()`` and maps
    the result back onto the source voxels afterwards:

    ``orientation``
        Three letters, one of each pair L/R, P/A, I/S: the direction in which each array axis
        increases, as in nibabel and MONAI (``"RAS"``: axis 0 towards the patient's right,
        axis 1 anterior, axis 2 superior). The node permutes and flips the array; an oblique
        series is brought to the closest such orientation, never interpolated.
    ``spacing``
        Millimetres between voxel centres along each array axis (after ``orientation``). The
        image is resampled linearly onto a grid of that spacing centred on the same field of
        view; the result comes back to the source grid by nearest neighbour.
    ``intensity``
        An :class:`IntensityWindow`, an :class:`IntensityZScore`, or ``None`` (values as
        stored, after Rescale Slope/Intercept).
    """

    orientation: str | None = None
    spacing: tuple[float, float, float] | None = None
    intensity: IntensityWindow | IntensityZScore | None = None

    def __post_init__(self) -> None:
        if self.orientation is not None:
            code = self.orientation
            if not (
                isinstance(code, str)
                and _ORIENTATION_CODE.fullmatch(code)
                and len({AXIS_LETTERS[letter] for letter in code} | {_opposite(letter) for letter in code})
                == 6
            ):
                raise ValueError(
                    f"InputSpec orientation is {code!r}; it must be three letters, one of each pair "
                    "L/R, P/A and I/S, such as 'RAS' or 'LPS'"
                )
        if self.spacing is not None:
            if len(self.spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in self.spacing):
                raise ValueError(
                    f"InputSpec spacing is {self.spacing!r}; it must be three positive millimetre values"
                )
            object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))
        if self.intensity is not None and not isinstance(self.intensity, IntensityWindow | IntensityZScore):
            raise ValueError(
                f"InputSpec intensity is {self.intensity!r}; it must be an IntensityWindow, an "
                "IntensityZScore or None"
            )

    @property
    def is_native(self) -> bool:
        """True when the pipeline takes the volume exactly as the series gives it."""
        return self.orientation is None and self.spacing is None and self.intensity is None


def _opposite(letter: str) -> tuple[float, float, float]:
    x, y, z = AXIS_LETTERS[letter]
    return (-x, -y, -z)


# --------------------------------------------------------------------------------------------
# Where it runs
# --------------------------------------------------------------------------------------------


class DeviceKind(enum.Enum):
    """A kind of device a pipeline can run on."""

    CPU = "cpu"
    CUDA = "cuda"


_TORCH_DEVICE = re.compile(r"cpu|cuda:\d+")


@dataclass(frozen=True)
class Runtime:
    """Where the node runs a pipeline instance; set as ``pipeline.runtime`` before ``load()``.

    ``device`` is a torch device string, ``"cpu"`` or ``"cuda:N"``. With ``amp`` the node runs
    ``run()`` under ``torch.autocast`` (bfloat16 where the GPU supports it, else float16);
    it is only ever true on CUDA, and only for pipelines that declare ``amp = True``.
    """

    device: str = "cpu"
    amp: bool = False

    def __post_init__(self) -> None:
        if not _TORCH_DEVICE.fullmatch(self.device):
            raise ValueError(f"Runtime device is {self.device!r}; it must be 'cpu' or 'cuda:N'")
        if self.amp and not self.is_cuda:
            raise ValueError("Runtime amp is only for CUDA devices")

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")


# --------------------------------------------------------------------------------------------
# What a pipeline returns
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Quantity:
    """A numeric measurement a pipeline made itself, for one segment: concept name (e.g.
    ``Code("118565006", "SCT", "Volume")``), value and UCUM unit (``Code("mm", "UCUM",
    "millimeter")``)."""

    name: Code
    value: float
    unit: Code


@dataclass(frozen=True)
class Finding:
    """A coded qualitative evaluation (TID 1500 "Qualitative Evaluations"): concept name and
    coded value, for one segment (its label) or for the whole study (``segment=None``)."""

    name: Code
    value: Code
    segment: str | None = None


@dataclass(frozen=True, eq=False)
class PipelineResult:
    """What a pipeline returns, on the grid of the volume its ``run()`` was given.

    Either ``masks`` (a boolean array per segment label; segments may overlap) or
    ``label_map`` (one integer array: 0 is background, ``n`` the ``n``-th declared segment,
    counting from 1), not both. ``measurements`` adds the pipeline's own numbers per segment
    label, ``findings`` its coded conclusions; the node measures volume and mean intensity
    itself (:class:`Measurement`).
    """

    masks: Mapping[str, np.ndarray] = field(default_factory=dict)
    label_map: np.ndarray | None = None
    measurements: Mapping[str, tuple[Quantity, ...]] = field(default_factory=dict)
    findings: tuple[Finding, ...] = ()


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


class Pipeline(ABC):
    """Base class of every pipeline.

    Subclasses set the class attributes and implement :meth:`run`. A worker creates one
    instance per pipeline, sets :attr:`runtime`, calls :meth:`load` once, and then :meth:`run`
    for every study, so weights loaded in :meth:`load` stay warm.
    """

    name: ClassVar[str]
    version: ClassVar[str]
    description: ClassVar[str]
    accepts: ClassVar[SeriesCriteria]
    segments: ClassVar[tuple[SegmentSpec, ...]]
    #: the grid and intensities :meth:`run` receives; the default is the series as it is
    input: ClassVar[InputSpec] = InputSpec()
    #: devices the pipeline can run on; a rule-based pipeline runs on the CPU only
    devices: ClassVar[frozenset[DeviceKind]] = frozenset({DeviceKind.CPU})
    #: whether the node may run :meth:`run` under automatic mixed precision on CUDA
    amp: ClassVar[bool] = False

    #: where this instance runs; the node sets it before :meth:`load`
    runtime: Runtime = Runtime()

    @classmethod
    def model_checksum(cls) -> str | None:
        """``"sha256:<hex>"`` of the model weights, or ``None`` for a pipeline without any.

        Part of the pipeline's identity with :attr:`name` and :attr:`version`; shown by
        ``ai-node pipelines show`` and ``GET /ai/pipelines``.
        """
        return None

    def load(self) -> None:  # noqa: B027 - optional hook, most rule-based pipelines need nothing
        """Load weights and other expensive state onto ``self.runtime.device``; called once
        per worker."""

    @abstractmethod
    def run(self, volume: Volume) -> PipelineResult:
        """Segment ``volume``; return one mask per segment of :attr:`segments`."""
