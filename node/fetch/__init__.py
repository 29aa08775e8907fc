"""Fetching a job's input: the chosen series' instances, from Orthanc, without gzip."""
