"""Series stored in the compressed transfer syntaxes PACS use still become volumes."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEGLSLossless, RLELossless

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
