"""What the worker makes of hostile input series: a failed job in words, or a done job that
says what it left out; never "internal error in the node"."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from pydicom.dataset import Dataset

from tests.factories import CORONAL, make_series
from tests.unit.test_execution import DIST, enqueue, worker_for


@pytest.fixture(autouse=True)
def _example_pipelines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(DIST))


def ct_series() -> list[Dataset]:
    stored = np.zeros((8, 40, 40), dtype=np.int16)  # -1024 HU after rescale
    stored[2:6, 10:30, 10:30] = 1024 + 700  # bone
    return make_series(stored, spacing=(3.0, 0.9, 0.9))


def scout_of(series: list[Dataset]) -> Dataset:
    """A coronal localizer stored in the axial series, as CT scanners do."""
    scout = make_series(np.zeros((1, 40, 40), dtype=np.int16), orientation=CORONAL)[0]
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        setattr(scout, keyword, getattr(series[0], keyword))
    scout.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    scout.InstanceNumber = 100
    return scout


def test_a_localizer_is_left_out_and_the_job_says_so(tmp_path, caplog) -> None:
    series = ct_series()
    worker = worker_for(tmp_path, [scout_of(series), *series])
    job = enqueue(worker.store, "example-bone", "0.1.0")

    with caplog.at_level(logging.INFO, logger="node.worker"):
        worker.run_one()

    done = worker.store.get(job)
    assert done.status == "done", done.error
    assert (done.result["source_instances"], done.result["localizers_left_out"]) == (9, 1)
    assert f"1 localizer of series {series[0].SeriesInstanceUID} left out of the volume" in caplog.text


def test_zero_pixel_spacing_fails_the_job_naming_the_input_not_the_node(tmp_path) -> None:
    series = ct_series()
    for ds in series:
        ds.PixelSpacing = [0, 0]
    worker = worker_for(tmp_path, series)
    job = enqueue(worker.store, "example-bone", "0.1.0")

    worker.run_one()

    failed = worker.store.get(job)
    assert failed.status == "failed"
    assert failed.error is not None
    assert "internal error" not in failed.error
    assert f"Series {series[0].SeriesInstanceUID}" in failed.error
    assert "Pixel Spacing (0028,0030) is 0\\0" in failed.error


def test_a_japanese_study_without_slice_thickness_is_done(tmp_path) -> None:
    series = ct_series()
    for ds in series:
        ds.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
        ds.PatientName = "Yamada^Tarou=山田^太郎=やまだ^たろう"
        del ds.SliceThickness
    worker = worker_for(tmp_path, series)
    job = enqueue(worker.store, "example-bone", "0.1.0")

    worker.run_one()

    done = worker.store.get(job)
    assert done.status == "done", done.error
    (seg,) = worker.destination.kept
    assert str(seg.PatientName) == "Yamada^Tarou=山田^太郎=やまだ^たろう"
