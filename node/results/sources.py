"""The source images' headers as the result builders read them: legal, if unusual, made plain.

highdicom copies the patient and study of a result object from its first source image and reads
every attribute it copies as if it had a valid value; the secondary captures copy a few more.
Real series are not always like that, and Orthanc accepts them all the same:

- a Type 2 attribute of the Patient or General Study module (PS3.3 C.7.1.1, C.7.2.1) that is
  absent, or whose value is not valid for its VR (a Study Date ``2012-09-14``, a 70-character
  name) or its enumerated values (Patient's Sex ``X``): Type 2 means "present, empty when
  unknown", so the results get it empty rather than fail validation; a copied Type 3 attribute
  with an invalid value (Body Part Examined ``head``) is left out;
- Specific Character Set (0008,0005) with code extensions and an empty first value (PS3.3
  C.12.1.1.2: value 1 empty means the default repertoire, ISO 2022 IR 6), which highdicom refuses;
  it is written as ``ISO 2022 IR 6`` instead, which is what it means. A character set highdicom
  does not know (a misspelt term, or a defined term missing from its table, such as Korean
  ``ISO 2022 IR 149``) is replaced by UTF-8, ``ISO_IR 192``: pydicom has decoded the source's
  text already, and UTF-8 writes any of it, so names stay readable.

Values are checked with pydicom's own VR validation. A header that needs none of this is used as
it is; one that does is read through a copy (the source dataset is never changed). Slice
Thickness, the other Type 2 attribute highdicom reads, is not filled in here: it cannot be
invented for the source images, so the SR's Image Library leaves it out
(:func:`node.results.report.image_library`), secondary captures write it empty and the SEG states
its own voxels' depth (:func:`node.results.seg.build_segmentation`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from copy import copy as shallow_copy

from highdicom import PatientSexValues
from highdicom.valuerep import _check_specific_character_set
from pydicom import config
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import DSfloat, PersonName, validate_value

log = logging.getLogger(__name__)

#: Type 2 attributes of the Patient and General Study modules that highdicom copies from the
#: source image into every result object, reading each as if it had a value
COPIED_TYPE_2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
)
#: Type 3 attributes the secondary captures copy from their source slice
COPIED_TYPE_3 = ("BodyPartExamined",)

#: PS3.3 C.12.1.1.2: "If the attribute Specific Character Set has more than one value and value
#: 1 is empty, it is assumed that value 1 is ISO 2022 IR 6."
DEFAULT_REPERTOIRE_WITH_EXTENSIONS = "ISO 2022 IR 6"
#: Unicode in UTF-8 (PS3.3 C.12.1.1.2): encodes any text pydicom decoded from any character set
UTF8 = "ISO_IR 192"


def result_source(dataset: Dataset) -> Dataset:
    """``dataset``, or a copy of its header that the result builders can read (see the module)."""
    fixes = header_fixes(dataset)
    if not fixes:
        return dataset
    copy = header_copy(dataset)
    for keyword, value in fixes.items():
        if value is None:
            delattr(copy, keyword)
        else:
            setattr(copy, keyword, value)
    return copy


def header_fixes(dataset: Dataset) -> dict[str, str | list[str] | None]:
    """What :func:`result_source` changes in ``dataset``: keyword -> new value, None to leave the
    attribute out."""
    fixes: dict[str, str | list[str] | None] = {}
    character_set = result_character_set(dataset)
    if character_set != dataset.get("SpecificCharacterSet"):
        fixes["SpecificCharacterSet"] = character_set
    for keyword in COPIED_TYPE_2:
        if keyword not in dataset or not _valid(dataset, keyword):
            fixes[keyword] = ""
    for keyword in COPIED_TYPE_3:
        if keyword in dataset and not _valid(dataset, keyword):
            fixes[keyword] = None
    return fixes


def _valid(dataset: Dataset, keyword: str) -> bool:
    element = dataset[keyword]
    values = element.value if isinstance(element.value, MultiValue | list) else [element.value]
    try:
        for value in values:
            if value not in (None, ""):
                # a PersonName is checked as the text it is written as (pydicom passes the
                # object itself unchecked)
                validate_value(
                    element.VR, str(value) if isinstance(value, PersonName) else value, config.RAISE
                )
    except ValueError:
        return False
    if keyword == "PatientSex" and element.value:
        return str(element.value) in {sex.value for sex in PatientSexValues}
    return True


def header_copy(dataset: Dataset) -> Dataset:
    """A dataset with the elements of ``dataset``, to set attributes on without changing it.

    Every element is read through ``dataset`` first, so a value still raw is decoded in the
    source's own character set before the copy's may change. Each element is copied (setting
    a value changes the element itself), its value is not: Pixel Data and sequences are shared
    and must not be changed in place.
    """
    copy = Dataset({element.tag: shallow_copy(element) for element in dataset})
    file_meta = getattr(dataset, "file_meta", None)
    if file_meta is not None:
        copy.file_meta = file_meta
    return copy


def has_slice_thickness(dataset: Dataset) -> bool:
    """Whether ``dataset`` says how thick its slice is (Slice Thickness is Type 2: it may be
    absent or empty; some modalities write 0)."""
    thickness = dataset.get("SliceThickness")
    # zero is no thickness either: the SEG's Pixel Measures refuse it
    return isinstance(thickness, int | float) and thickness > 0


def with_slice_thickness(dataset: Dataset, thickness_mm: float) -> Dataset:
    """``dataset`` when it has a Slice Thickness, else a :func:`header_copy` with ``thickness_mm``."""
    if has_slice_thickness(dataset):
        return dataset
    copy = header_copy(dataset)
    copy.SliceThickness = DSfloat(thickness_mm, auto_format=True)
    return copy


def result_sources(datasets: Sequence[Dataset]) -> list[Dataset]:
    """:func:`result_source` of each of ``datasets``, in their order."""
    if datasets:
        # once per series, and by keyword only: the values are the patient's
        changed = header_fixes(datasets[0])
        if "SpecificCharacterSet" in changed:
            log.info(
                "the results are written in Specific Character Set %s; the source images have %s",
                "\\".join(_values(changed.pop("SpecificCharacterSet"))),
                "\\".join(_values(datasets[0].get("SpecificCharacterSet"))),
            )
        if changed:
            log.info(
                "the source images have no valid value of %s: the results leave them empty or out",
                ", ".join(changed),
            )
    return [result_source(dataset) for dataset in datasets]


def _values(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, MultiValue | list) else [str(value or "")]


def result_character_set(dataset: Dataset) -> str | list[str] | None:
    """The Specific Character Set the results of ``dataset`` are written in: its own when
    highdicom accepts it, else what it means or UTF-8 (see the module). None: the default
    repertoire (absent or empty)."""
    value = dataset.get("SpecificCharacterSet")
    values = [v.strip() for v in _values(value)]
    if values == [""]:
        return None if value is None else value  # type: ignore[no-any-return]
    if len(values) > 1 and values[0] == "":
        values[0] = DEFAULT_REPERTOIRE_WITH_EXTENSIONS
    candidate: str | list[str] = values if len(values) > 1 else values[0]
    try:
        # highdicom's own check (private, so pinned with highdicom in requirements.txt): the
        # builders run it, and a value it refuses fails them with a bare ValueError
        _check_specific_character_set(candidate)
    except ValueError:
        return UTF8
    return candidate
