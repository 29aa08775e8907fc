"""Download the series a job runs on from Orthanc.

Through Orthanc's REST API, a few instances at a time, with ``Accept-Encoding: identity``
(:class:`~node.orthanc.client.OrthancClient`): Orthanc gzips each instance otherwise, 25 times
slower for a CT (../shared/PERFORMANCE.md). Reading Orthanc's storage folder directly was only
10 % faster and would tie the worker to Orthanc's host.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import pydicom
from pydicom.dataset import Dataset

from node.errors import InputStudyError, NoMatchingSeriesError, OrthancError
from node.orthanc.client import OrthancClient
from node.orthanc.study import summarize_study
from node.study.criteria import SeriesCriteria, select_series


def fetch_series(
    orthanc: OrthancClient,
    *,
    study_id: str,
    series_instance_uid: str | None,
    criteria: SeriesCriteria,
    threads: int,
) -> list[Dataset]:
    """The instances of the series a job runs on, parsed.

    ``series_instance_uid`` is the series routing chose when the job was queued; ``None`` (a job
    queued by hand) lets ``criteria`` choose, as routing would. Raises
    :class:`~node.errors.NoMatchingSeriesError` when that series is gone or none matches,
    :class:`~node.errors.InputStudyError` when the study is gone, and
    :class:`~node.errors.OrthancError` when Orthanc did not answer (its client has retried).
    """
    try:
        study = summarize_study(orthanc.get_json, study_id)
    except OrthancError as error:
        if error.not_found:
            raise InputStudyError(
                "the study is no longer in Orthanc (deleted after the job was queued); nothing to process"
            ) from error
        raise
    inputs = study.input_series()
    if series_instance_uid is not None:
        inputs = [s for s in inputs if s.summary.series_instance_uid == series_instance_uid]
        if not inputs:
            raise NoMatchingSeriesError(
                f"series {series_instance_uid}, chosen when the job was queued, is no "
                "longer in the study (deleted?); re-run the study to route it again"
            )
    chosen = select_series([series.summary for series in inputs], criteria)
    series = next(s for s in inputs if s.summary.series_instance_uid == chosen.series_instance_uid)
    instance_ids = orthanc.get_json(f"/series/{series.orthanc_id}")["Instances"]
    try:
        with ThreadPoolExecutor(threads) as pool:
            files = list(pool.map(orthanc.instance_file, instance_ids))
    except OrthancError as error:
        if error.not_found:
            raise InputStudyError(
                f"instances of series {chosen.series_instance_uid} were deleted from Orthanc while "
                "the job fetched them; nothing was processed"
            ) from error
        raise
    return [pydicom.dcmread(io.BytesIO(data)) for data in files]
