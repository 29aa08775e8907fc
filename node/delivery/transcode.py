"""The transfer syntax a destination receives results in (``transfer_syntax`` of a destination).

Results are staged as Explicit VR Little Endian, which every DICOM system and OHIF 3.13 read.
An archive or viewer that takes compressed objects can ask for them, per destination:

- ``deflated``: Deflated Explicit VR Little Endian (PS3.5 A.5), the whole data set deflated;
  any object, a BINARY SEG included (its bits shrink several-fold). A DICOM peer that does not
  accept it gets the objects uncompressed (pynetdicom re-encodes them in the accepted syntax).
- ``rle``: RLE Lossless (PS3.5 A.4.2) for objects whose Pixel Data RLE can hold (8 or 16 bits
  a sample: a LABELMAP SEG, secondary captures); objects without Pixel Data (SRs) or with one bit
  a pixel (a BINARY SEG, which RLE cannot encode) go uncompressed.

Transcoding makes new datasets that share the staged ones' elements; only what changes is new.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, RLELossless

_PIXEL_DATA = 0x7FE00010
_TRANSFER_SYNTAX = 0x00020010


class TransferSyntaxChoice(enum.StrEnum):
    """What a destination's ``transfer_syntax`` setting may say."""

    EXPLICIT = "explicit"
    DEFLATED = "deflated"
    RLE = "rle"


def transcoded(datasets: Sequence[Dataset], choice: TransferSyntaxChoice) -> list[Dataset]:
    """``datasets`` in the transfer syntax ``choice`` asks for (see the module)."""
    if choice is TransferSyntaxChoice.EXPLICIT:
        return list(datasets)
    return [
        _deflated(dataset) if choice is TransferSyntaxChoice.DEFLATED else _rle(dataset)
        for dataset in datasets
    ]


def _deflated(dataset: Dataset) -> Dataset:
    copy = _sharing(dataset)
    copy.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    return copy


def _rle(dataset: Dataset) -> Dataset:
    if "PixelData" not in dataset or int(dataset.get("BitsAllocated", 0)) not in (8, 16):
        return dataset
    syntax = getattr(dataset.file_meta, "TransferSyntaxUID", ExplicitVRLittleEndian)
    if syntax.is_encapsulated:
        return dataset
    copy = _sharing(dataset)
    # a new element, so that compressing it leaves the staged dataset's Pixel Data as it is
    copy[_PIXEL_DATA] = DataElement(_PIXEL_DATA, dataset["PixelData"].VR, dataset.PixelData)
    copy.compress(RLELossless, encoding_plugin="pydicom")
    return copy


def _sharing(dataset: Dataset) -> Dataset:
    """A new dataset holding ``dataset``'s element objects; its Transfer Syntax UID is an
    element of its own, so that setting it (as compressing does) leaves ``dataset`` alone."""
    copy = Dataset()
    for tag in dataset.keys():
        copy[tag] = dataset.get_item(tag)
    original = getattr(dataset, "file_meta", FileMetaDataset())
    meta = FileMetaDataset()  # FileMetaDataset(original) would share original's element mapping
    for tag in original.keys():
        meta[tag] = original.get_item(tag)
    syntax = original.get("TransferSyntaxUID", ExplicitVRLittleEndian)
    meta[_TRANSFER_SYNTAX] = DataElement(_TRANSFER_SYNTAX, "UI", syntax)
    copy.file_meta = meta
    copy.set_original_encoding(
        dataset.original_encoding[0], dataset.original_encoding[1], dataset.original_character_set
    )
    return copy
