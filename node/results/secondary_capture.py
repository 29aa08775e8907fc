"""Build the secondary-capture series: the source slices with the segments burned in.

A fallback for PACS that cannot display a DICOM SEG. Each source slice becomes one Secondary
Capture Image (PS3.3 A.8.1, SOP Class 1.2.840.10008.5.1.4.1.1.7): the slice windowed to 8-bit
grey, each segment blended in its colour with its outline drawn opaque, a legend naming every
segment and its volume, and the words "AI result — not for primary diagnosis" with the
pipeline's name and version.

The SC IOD has no Image Plane module, but each image carries the source slice's Frame of
Reference UID, Image Position and Orientation (Patient), Pixel Spacing and Slice Thickness as
Standard Extended attributes (PS3.2 "Standard Extended SOP Class"), and the source's Instance
Number, so viewers that link series by position or by number scroll this series alongside the
source. One single-frame image per slice rather than one Multi-frame True Color SC: older
PACS, the ones that need this fallback, link and scroll single-frame images by their Image
Position (Patient) but seldom the per-frame functional groups of a multi-frame object.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import ExplicitVRLittleEndian
from scipy import ndimage

from node.errors import ResultValidationError
from node.imaging.volume import Volume
from node.pipeline.base import SegmentSpec
from node.pipeline.voxels import SegmentVoxels
from node.results.measure import SegmentMeasurements
from node.results.seg import AlgorithmInfo, DeviceInfo, order_source_images
from node.results.sources import has_slice_thickness

#: Series Number (0020,0011) of a new secondary-capture series: the number docs/conformance.md lists.
DEFAULT_SC_SERIES_NUMBER = 9904

#: Burned into every image, and (in ASCII) written as Image Comments.
NOTICE = "AI result — not for primary diagnosis"
#: Opacity of a segment's colour over the grey image inside the segment; its outline is opaque.
FILL_OPACITY = 0.35
#: TrueType font for the annotations (Debian fonts-dejavu-core); Pillow's own font otherwise.
FONT_FILE = "DejaVuSans.ttf"

#: Purpose of Reference of the Source Image Sequence (CID 7202).
_SOURCE_IMAGE_PURPOSE = hd.sr.CodedConcept("121322", "DCM", "Source image for image processing operation")
#: Patient Orientation (0020,0020) letter for each LPS axis, by sign (PS3.3 C.7.6.1.1.1).
_ORIENTATION_LETTERS = (("R", "L"), ("A", "P"), ("F", "H"))


@dataclass(frozen=True)
class Window:
    """A linear VOI window (PS3.3 C.11.2.1.2.1) from the volume's values to 8-bit grey."""

    center: float
    width: float

    def __post_init__(self) -> None:
        if not self.width >= 1:
            raise ResultValidationError(
                f"Window Width {self.width} is less than 1; PS3.3 C.11.2.1.2.1 requires >= 1."
            )

    def apply(self, values: np.ndarray) -> np.ndarray:
        """Map ``values`` to 0-255 as PS3.3 C.11.2.1.2.1 maps them for the LINEAR function."""
        if self.width == 1:  # the standard's own special case: a threshold at c - 0.5
            return np.where(values > self.center - 0.5, 255, 0).astype(np.uint8)
        scaled = ((values - (self.center - 0.5)) / (self.width - 1) + 0.5) * 255.0
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


#: Soft-tissue window for CT series that carry none.
CT_DEFAULT_WINDOW = Window(center=40.0, width=400.0)
#: Percentiles of the volume's values that span the window of a series without a window of its
#: own and without a standard one (MR signal has no fixed scale).
WINDOW_PERCENTILES = (1.0, 99.0)


def window_for_series(volume: Volume, source_images: Sequence[Dataset]) -> Window:
    """The one window used for every slice, so scrolling does not change the brightness.

    The series' own first Window Center/Width (0028,1050/1051) on its middle slice, when it has
    one: the window the modality chose for this reconstruction (brain, lung, soft tissue).
    Otherwise W400/L40 for CT (Hounsfield units), and for anything else the 1st to 99th
    percentile of the volume's values.
    """
    middle = source_images[len(source_images) // 2] if source_images else Dataset()
    center, width = _first_value(middle.get("WindowCenter")), _first_value(middle.get("WindowWidth"))
    if center is not None and width is not None and width >= 1:
        return Window(center=center, width=width)
    if volume.modality == "CT":
        return CT_DEFAULT_WINDOW
    low, high = (float(v) for v in np.percentile(volume.array, WINDOW_PERCENTILES))
    return Window(center=(low + high) / 2, width=max(high - low, 1.0))


def blend_segments(
    grey: np.ndarray, masks: Sequence[np.ndarray], colours: Sequence[tuple[int, int, int]]
) -> np.ndarray:
    """RGB image of the 8-bit ``grey`` slice with each 2D mask blended in its colour.

    Inside a mask the colour covers the grey with :data:`FILL_OPACITY`; the mask's own border
    pixels (those with a 4-neighbour outside it) take the colour fully. Later masks are drawn
    over earlier ones.
    """
    image = np.repeat(grey[..., None], 3, axis=-1).astype(np.float32)
    for mask, colour in zip(masks, colours, strict=True):
        if not mask.any():
            continue
        rgb = np.asarray(colour, dtype=np.float32)
        image[mask] = (1.0 - FILL_OPACITY) * image[mask] + FILL_OPACITY * rgb
        border = mask & ~ndimage.binary_erosion(mask, border_value=0)
        image[border] = rgb
    return np.rint(image).astype(np.uint8)


@dataclass(frozen=True)
class LegendEntry:
    label: str
    colour: tuple[int, int, int]
    volume_ml: float


def annotation_layer(
    shape: tuple[int, int], legend: Sequence[LegendEntry], caption: Sequence[str]
) -> np.ndarray:
    """An RGBA (rows, columns, 4) layer: the legend at the top left, the caption at the bottom.

    The text is white with a black outline so it reads on any grey; its size follows the image
    (a 512-pixel image gets 16-pixel text).
    """
    rows, columns = shape
    size = int(np.clip(round(min(rows, columns) / 32), 8, 28))
    font = load_font(size)
    layer = Image.new("RGBA", (columns, rows), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    margin, line = max(size // 2, 2), round(size * 1.3)
    y = margin
    for entry in legend:
        draw.rectangle(
            (margin, y, margin + size - 1, y + size - 1), fill=(*entry.colour, 255), outline=(0, 0, 0, 255)
        )
        _text(draw, (margin + size + size // 2, y), f"{entry.label}: {entry.volume_ml:.1f} mL", font)
        y += line
    y = rows - margin - line * len(caption)
    for text in caption:
        _text(draw, (margin, y), text, font)
        y += line
    return np.asarray(layer)


def load_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans at ``size`` pixels, or Pillow's built-in font when DejaVu is not installed."""
    try:
        return ImageFont.truetype(FONT_FILE, size)
    except OSError:
        return ImageFont.load_default(size)


def build_secondary_captures(
    *,
    source_images: Sequence[Dataset],
    volume: Volume,
    segments: Sequence[SegmentSpec],
    voxels: SegmentVoxels,
    measurements: Sequence[SegmentMeasurements],
    algorithm: AlgorithmInfo,
    device: DeviceInfo,
    series_instance_uid: str,
    sop_instance_uids: Sequence[str],
    series_number: int = DEFAULT_SC_SERIES_NUMBER,
) -> list[hd.sc.SCImage]:
    """One RGB Secondary Capture Image per slice of ``volume``, in slice order.

    ``voxels`` are the segments' voxels (:class:`~node.pipeline.voxels.SegmentVoxels`);
    ``sop_instance_uids`` one SOP Instance UID per slice. Every image copies the patient and
    study of its source slice, and its geometry (see the module documentation), references the
    slice in the Source Image Sequence (PS3.3 C.12.4), and says Burned In Annotation NO: the
    burned-in text names no patient.

    Raises :class:`~node.errors.ResultValidationError` when the voxels, measurements or UIDs do
    not match the segments and slices.
    """
    _check_consistent(volume, segments, voxels, measurements, sop_instance_uids)
    ordered = order_source_images(source_images, volume)
    window = window_for_series(volume, ordered)
    colours = [spec.rgb for spec in segments]
    layer = annotation_layer(
        volume.shape[1:],
        [LegendEntry(m.label, spec.rgb, m.volume_ml) for spec, m in zip(segments, measurements, strict=True)],
        [NOTICE, f"{algorithm.name} {algorithm.version}"],
    )
    alpha = layer[..., 3:].astype(np.float32) / 255.0
    instance_numbers = _instance_numbers(ordered)
    orientation = (_orientation_letter(volume.row_direction), _orientation_letter(volume.column_direction))
    images = []
    for index, source in enumerate(ordered):
        planes = [voxels.plane(index, number) for number in range(1, voxels.count + 1)]
        blended = blend_segments(window.apply(volume.array[index]), planes, colours)
        pixels = np.rint(alpha * layer[..., :3] + (1.0 - alpha) * blended).astype(np.uint8)
        image = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=source,
            pixel_array=pixels,
            photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
            bits_allocated=8,
            coordinate_system=hd.CoordinateSystemNames.PATIENT,
            series_instance_uid=series_instance_uid,
            series_number=series_number,
            sop_instance_uid=sop_instance_uids[index],
            instance_number=instance_numbers[index],
            **device.equipment(),
            series_description=f"AI overlay {algorithm.name}"[:64],
            patient_orientation=orientation,
            transfer_syntax_uid=ExplicitVRLittleEndian,
        )
        _copy_geometry(source, image)
        _describe_derivation(source, image)
        images.append(image)
    return images


def _copy_geometry(source: Dataset, image: Dataset) -> None:
    """The source slice's plane and the attributes dciodvfy needs to judge laterality."""
    for keyword in (
        "FrameOfReferenceUID",
        "PositionReferenceIndicator",
        "ImagePositionPatient",
        "ImageOrientationPatient",
        "PixelSpacing",
        "SliceLocation",
        "BodyPartExamined",
        "Laterality",
        "ImageLaterality",
    ):
        if keyword in source:
            setattr(image, keyword, source[keyword].value)
    # Type 2 in the Image Plane module: empty when the source does not say (or says 0)
    image.SliceThickness = source.SliceThickness if has_slice_thickness(source) else None
    if "PositionReferenceIndicator" not in image:
        image.PositionReferenceIndicator = ""  # Type 2 in the Frame of Reference module
    if not any(keyword in image for keyword in ("Laterality", "ImageLaterality", "BodyPartExamined")):
        # General Series Laterality is Type 2C; without a body part it is unknown, so empty.
        image.Laterality = ""


def _describe_derivation(source: Dataset, image: Dataset) -> None:
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    reference.PurposeOfReferenceCodeSequence = [_SOURCE_IMAGE_PURPOSE]
    image.SourceImageSequence = [reference]
    image.DerivationDescription = "Segmentation by an AI pipeline burned into the source image"
    image.ImageComments = NOTICE.replace("—", "-")
    image.BurnedInAnnotation = "YES" if source.get("BurnedInAnnotation") == "YES" else "NO"
    # Conversion Type (PS3.3 C.8.6.1): rendered by software on a workstation, not captured from
    # a modality's digital interface (highdicom's default, DI).
    image.ConversionType = "WSD"


def _instance_numbers(ordered: Sequence[Dataset]) -> list[int]:
    """The source's Instance Numbers when they are distinct and positive, else 1..n."""
    numbers = [source.get("InstanceNumber") for source in ordered]
    if all(isinstance(n, int) and n > 0 for n in numbers) and len(set(numbers)) == len(numbers):
        return [int(n) for n in numbers]
    return list(range(1, len(ordered) + 1))


def _orientation_letter(direction: tuple[float, float, float]) -> str:
    """Patient Orientation letter of the axis a direction is closest to (LPS: +x is L)."""
    axis = int(np.argmax(np.abs(direction)))
    return _ORIENTATION_LETTERS[axis][int(direction[axis] > 0)]


def _first_value(value: object) -> float | None:
    """The first value of a DS attribute that may hold several (Window Center/Width)."""
    if isinstance(value, MultiValue):
        value = value[0] if len(value) else None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _text(
    draw: ImageDraw.ImageDraw,
    xy: tuple[int, int],
    text: str,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
) -> None:
    white, black = (255, 255, 255, 255), (0, 0, 0, 255)
    if not (isinstance(font, ImageFont.FreeTypeFont) and str(font.path).endswith(FONT_FILE)):
        # Pillow's own fonts cover little beyond ASCII.
        text = text.replace("—", "-").encode("ascii", "replace").decode("ascii")
    if isinstance(font, ImageFont.FreeTypeFont):
        draw.text(xy, text, font=font, fill=white, stroke_width=1, stroke_fill=black)
    else:  # a bitmap font cannot be stroked
        draw.text(xy, text, font=font, fill=white)


def _check_consistent(
    volume: Volume,
    segments: Sequence[SegmentSpec],
    voxels: SegmentVoxels,
    measurements: Sequence[SegmentMeasurements],
    sop_instance_uids: Sequence[str],
) -> None:
    declared = [(number, spec.label) for number, spec in enumerate(segments, start=1)]
    measured = [(m.segment_number, m.label) for m in measurements]
    if declared != measured or voxels.count != len(segments):
        raise ResultValidationError(
            f"The secondary captures need one mask and measurement per segment: segments "
            f"(number, label) declared {declared}, measured {measured}; {voxels.count} mask(s)."
        )
    if len(sop_instance_uids) != volume.shape[0] or len(set(sop_instance_uids)) != volume.shape[0]:
        raise ResultValidationError(
            f"The secondary captures need {volume.shape[0]} distinct SOP Instance UIDs, one per "
            f"slice; {len(set(sop_instance_uids))} distinct of {len(sop_instance_uids)} were given."
        )
