"""Series stored in the compressed transfer syntaxes PACS use still become volumes."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import HTJ2KLossless, JPEGBaseline8Bit, JPEGLSLossless, RLELossless

from node.errors import InputSeriesError
from node.imaging.series import build_volume
from tests.factories import make_series


def _ramp(slices: int = 3) -> np.ndarray:
    return (np.arange(slices * 32 * 48).reshape(slices, 32, 48) % 3000).astype(np.int16)


@pytest.mark.parametrize("syntax", [JPEGLSLossless, RLELossless], ids=["jpeg-ls", "rle"])
def test_lossless_series_decodes_to_the_original_values(syntax) -> None:
    pixels = _ramp()
    datasets = make_series(pixels)
    for ds in datasets:
        ds.compress(syntax)

    volume = build_volume(datasets)

    assert np.array_equal(volume.array, pixels.astype(np.float32) - 1024)


def test_jpeg_lossless_process_14_series_decodes() -> None:
    """JPEG Lossless SV1 (1.2.840.10008.1.2.4.70), the usual lossless syntax of PACS."""
    from pydicom.data import get_testdata_file

    real = pydicom.dcmread(get_testdata_file("JPGLosslessP14SV1_1s_1f_8b.dcm"))
    expected = real.pixel_array
    datasets = make_series(np.zeros((2, real.Rows, real.Columns), dtype=np.int16), rescale_intercept=0)
    for ds in datasets:
        ds.file_meta.TransferSyntaxUID = real.file_meta.TransferSyntaxUID
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit = 7
        ds.PixelRepresentation = 0
        ds.PhotometricInterpretation = real.PhotometricInterpretation
        ds.PixelData = real.PixelData

    volume = build_volume(datasets)

    assert np.array_equal(volume.array[1], expected.astype(np.float32))


def _grafted(real: pydicom.Dataset, slices: int = 2) -> list[pydicom.Dataset]:
    """A series whose every slice holds ``real``'s compressed pixel data, as it was encoded."""
    datasets = make_series(
        np.zeros((slices, real.Rows, real.Columns), dtype=np.int16),
        rescale_intercept=float(real.get("RescaleIntercept", 0)),
    )
    for ds in datasets:
        ds.file_meta.TransferSyntaxUID = real.file_meta.TransferSyntaxUID
        for keyword in (
            "BitsAllocated",
            "BitsStored",
            "HighBit",
            "PixelRepresentation",
            "PhotometricInterpretation",
        ):
            setattr(ds, keyword, getattr(real, keyword))
        ds.PixelData = real.PixelData
    return datasets


@pytest.mark.parametrize(
    ("name", "decoded"),
    [("693_J2KR.dcm", "693_UNCR.dcm"), ("693_J2KI.dcm", "693_UNCI.dcm")],
    ids=["lossless", "lossy"],
)
def test_jpeg_2000_ct_series_decodes_to_the_original_hounsfield_units(name: str, decoded: str) -> None:
    """Real CT slices in JPEG 2000 (1.2.840.10008.1.2.4.90 and .91), decoded by Pillow's
    OpenJPEG; pydicom-data holds each slice uncompressed as well (the lossy one as decoded)."""
    from pydicom.data import get_testdata_file

    real = pydicom.dcmread(get_testdata_file(name))
    original = pydicom.dcmread(get_testdata_file(decoded)).pixel_array

    volume = build_volume(_grafted(real))

    assert np.array_equal(volume.array[1], original.astype(np.float32) - 1024)


def test_jpeg_extended_12_bit_series_decodes() -> None:
    """JPEG Extended (process 2 and 4, 1.2.840.10008.1.2.4.51), the lossy 12-bit syntax of
    older CT and NM archives, decoded by libjpeg."""
    from pydicom.data import get_testdata_file

    real = pydicom.dcmread(get_testdata_file("JPGExtended.dcm"))
    expected = real.pixel_array

    volume = build_volume(_grafted(real))

    assert volume.shape == (2, 1024, 256)
    assert np.array_equal(volume.array[0], expected.astype(np.float32))


def test_jpeg_baseline_8_bit_series_decodes_close_to_the_original() -> None:
    """JPEG Baseline (process 1, 1.2.840.10008.1.2.4.50): 8-bit and lossy, as some archives
    store MR and secondary reconstructions."""
    from PIL import Image

    pixels = np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (48, 1))
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    datasets = make_series(np.zeros((2, 48, 64), dtype=np.int16), rescale_intercept=0)
    for ds in datasets:
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit = 7
        ds.PixelRepresentation = 0
        ds.PixelData = encapsulate([buffer.getvalue()])

    volume = build_volume(datasets)

    assert np.abs(volume.array[1] - pixels).max() <= 4  # lossy at quality 95


def test_high_throughput_jpeg_2000_without_a_decoder_is_an_input_error_that_names_the_syntax() -> None:
    """HTJ2K needs pylibjpeg-openjpeg, which the node does not install: the job fails naming the
    transfer syntax, so the admin can have the study sent uncompressed."""
    datasets = make_series(_ramp(2))
    for ds in datasets:
        ds.file_meta.TransferSyntaxUID = HTJ2KLossless
        ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(64)])

    with pytest.raises(
        InputSeriesError, match=r"instance 1 \(High-Throughput JPEG 2000 .*\) cannot be decoded"
    ):
        build_volume(datasets)
