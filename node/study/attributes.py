"""The values a rule condition sees: DICOM attributes by keyword, typed from the data dictionary.

Conditions name attributes by their PS3.6 keyword (``SliceThickness``, ``SeriesDescription``).
The Value Representation of each keyword (PS3.5 6.2) decides the type a condition sees, whatever
the source (a pydicom header or Orthanc's tags, where every value is a string):

- numbers (DS, IS, US, SS, UL, SL, UV, SV, FL, FD) are numbers, so ``SliceThickness <= 3.0``
  compares numerically even when Orthanc gives ``"3.0"``; a value that is not a number is null;
- attributes whose Value Multiplicity allows more than one value (``ImageType``,
  ``PixelSpacing``, VM ``1-n``) are always lists, even when one value is present, so
  ``"PRIMARY" in ImageType`` works for every series;
- everything else, dates and times included, is a string (``StudyDate >= "20260101"``);
- an absent or empty attribute is null, never an error.

Sequences and binary attributes (SQ, OB, OW, UN...) are not offered to conditions.

A study adds the study-level attributes PS3.4 C.6.1.1.4 defines for a study query:
``ModalitiesInStudy``, ``NumberOfStudyRelatedSeries`` and ``NumberOfStudyRelatedInstances``,
computed from its series.
"""

from __future__ import annotations

import difflib
import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pydicom
from pydicom.datadict import dictionary_VM, dictionary_VR, keyword_dict
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

#: What a condition sees: keyword → str, float, int, a tuple of those, or None.
Attributes = Mapping[str, Any]

#: Value Representations that hold numbers (PS3.5 6.2).
NUMERIC_VRS = frozenset({"DS", "IS", "US", "SS", "UL", "SL", "UV", "SV", "FL", "FD"})
_INTEGER_VRS = frozenset({"IS", "US", "SS", "UL", "SL", "UV", "SV"})
#: Value Representations that hold text (dates and times stay text: they sort as strings).
TEXT_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT", "AT"}
)


@dataclass(frozen=True)
class ValueKind:
    """How one keyword's values are typed; see :func:`value_kind`."""

    numeric: bool
    integer: bool
    multiple: bool


@functools.cache
def value_kind(keyword: str) -> ValueKind | None:
    """The kind of value ``keyword`` holds, or None when conditions cannot use it.

    None for a keyword the data dictionary does not know, and for sequences and binary data.
    """
    tag = keyword_dict.get(keyword)
    if tag is None:
        return None
    vr = dictionary_VR(tag)
    if vr not in NUMERIC_VRS and vr not in TEXT_VRS:
        return None
    return ValueKind(
        numeric=vr in NUMERIC_VRS,
        integer=vr in _INTEGER_VRS,
        multiple=dictionary_VM(tag) != "1",
    )


def is_attribute(keyword: str) -> bool:
    """Whether a condition may name ``keyword``."""
    return value_kind(keyword) is not None


def similar_keywords(name: str, *, limit: int = 3) -> list[str]:
    """Keywords close to a misspelt ``name``, best first (for error messages)."""
    usable = [keyword for keyword in keyword_dict if is_attribute(keyword)]
    return difflib.get_close_matches(name, usable, n=limit, cutoff=0.75)


# --------------------------------------------------------------------------------------------
# One value
# --------------------------------------------------------------------------------------------


def typed_value(keyword: str, value: Any) -> Any:
    """``value`` (from pydicom or Orthanc) as a condition sees ``keyword``; see the module doc."""
    kind = value_kind(keyword)
    if kind is None:
        return None
    items = _items(value)
    if not items:
        return None
    converted = tuple(_number(item, integer=kind.integer) if kind.numeric else _text(item) for item in items)
    if kind.multiple:
        if any(item is None for item in converted):
            return None
        return converted
    if len(converted) > 1:
        # Wrong Value Multiplicity in the data: the list is kept, so a comparison with one
        # number or string fails (the clause is false) instead of picking a value silently.
        return converted
    return converted[0]


def _items(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str):
        value = value.strip()
        # Orthanc joins the values of a multi-valued attribute with a backslash (PS3.5 6.4).
        return [] if value == "" else value.split("\\")
    if isinstance(value, MultiValue | list | tuple):
        return [item for item in value if item is not None and str(item).strip() != ""]
    if isinstance(value, bytes):
        return []
    return [value]


def _number(item: Any, *, integer: bool) -> int | float | None:
    try:
        number = float(str(item).strip())
    except ValueError:
        return None
    if not math.isfinite(number):
        return None
    if integer and number.is_integer():
        return int(number)
    return number


def _text(item: Any) -> str:
    if isinstance(item, PersonName):
        return str(item)
    return str(item).strip()


# --------------------------------------------------------------------------------------------
# Headers and tag dictionaries
# --------------------------------------------------------------------------------------------


def from_dataset(dataset: pydicom.Dataset) -> dict[str, Any]:
    """The typed attributes of a pydicom header (top level only; pixel data is not read)."""
    attributes: dict[str, Any] = {}
    for element in dataset:
        keyword = element.keyword
        if not keyword or element.VR == "SQ" or not is_attribute(keyword):
            continue
        value = typed_value(keyword, element.value)
        if value is not None:
            attributes[keyword] = value
    return attributes


def from_orthanc_tags(tags: Mapping[str, Any]) -> dict[str, Any]:
    """The typed attributes of Orthanc's simplified tags or ``MainDicomTags`` (keyword → string).

    Keys that are not usable keywords (sequences, private tags, Orthanc's own fields) are left out.
    """
    attributes: dict[str, Any] = {}
    for keyword, raw in tags.items():
        if not is_attribute(keyword):
            continue
        value = typed_value(keyword, raw)
        if value is not None:
            attributes[keyword] = value
    return attributes


# --------------------------------------------------------------------------------------------
# Studies and series
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeriesAttributes:
    """One series of a study as conditions see it; ``key`` names it in results (an Orthanc id
    or the Series Instance UID)."""

    key: str
    attributes: Attributes
    instance_count: int = 0


@dataclass(frozen=True)
class StudyAttributes:
    """A study as conditions see it: its own attributes and its series."""

    attributes: Attributes
    series: tuple[SeriesAttributes, ...] = field(default=())

    def study_values(self) -> dict[str, Any]:
        """What a study-level condition sees: study attributes plus the ones computed from the
        series (``ModalitiesInStudy``, ``NumberOfStudyRelatedSeries``, ``NumberOfStudyRelatedInstances``)."""
        values = dict(self.attributes)
        modalities = sorted(
            {str(s.attributes["Modality"]) for s in self.series if s.attributes.get("Modality")}
        )
        if modalities and "ModalitiesInStudy" not in values:
            values["ModalitiesInStudy"] = tuple(modalities)
        if self.series:
            values.setdefault("NumberOfStudyRelatedSeries", len(self.series))
            instances = sum(s.instance_count for s in self.series)
            if instances:
                values.setdefault("NumberOfStudyRelatedInstances", instances)
        return values

    def series_values(self, series: SeriesAttributes) -> dict[str, Any]:
        """What a series-level condition sees: the study's values overlaid with the series'."""
        values = self.study_values()
        values.update(series.attributes)
        return values


def study_from_datasets(datasets: Iterable[pydicom.Dataset]) -> StudyAttributes:
    """A study built from instance headers (e.g. DICOM files uploaded to the rule tester):
    instances are grouped into series by Series Instance UID."""
    by_series: dict[str, list[pydicom.Dataset]] = {}
    study: dict[str, Any] = {}
    for dataset in datasets:
        attributes = from_dataset(dataset)
        for keyword, value in attributes.items():
            study.setdefault(keyword, value)
        by_series.setdefault(str(dataset.get("SeriesInstanceUID", "")), []).append(dataset)
    series = tuple(
        SeriesAttributes(key=uid, attributes=from_dataset(members[0]), instance_count=len(members))
        for uid, members in by_series.items()
    )
    return StudyAttributes(attributes=_study_level(study), series=series)


def study_from_orthanc(
    study_tags: Mapping[str, Any],
    series: Sequence[tuple[str, Mapping[str, Any], int]],
) -> StudyAttributes:
    """A study from Orthanc: the study's tags, and per series its id, tags and instance count."""
    return StudyAttributes(
        attributes=from_orthanc_tags(study_tags),
        series=tuple(
            SeriesAttributes(key=key, attributes=from_orthanc_tags(tags), instance_count=count)
            for key, tags, count in series
        ),
    )


#: Series-level attributes that must not leak into the study attributes when a study is built
#: from instance headers (a study has several modalities and descriptions).
_SERIES_ONLY = frozenset(
    {
        "Modality",
        "SeriesInstanceUID",
        "SeriesNumber",
        "SeriesDescription",
        "SOPInstanceUID",
        "SOPClassUID",
        "InstanceNumber",
        "ImagePositionPatient",
        "ImageOrientationPatient",
        "SliceLocation",
        "AcquisitionNumber",
        "ImageType",
        "BodyPartExamined",
        "SliceThickness",
        "PixelSpacing",
        "Rows",
        "Columns",
        "ProtocolName",
        "SeriesDate",
        "SeriesTime",
    }
)


def _study_level(values: Mapping[str, Any]) -> dict[str, Any]:
    return {keyword: value for keyword, value in values.items() if keyword not in _SERIES_ONLY}
