"""Result objects: measurements, DICOM SEG, TID 1500 SRs and secondary captures, validated with
dciodvfy. Import the modules themselves (``node.results.seg``...): this package imports nothing,
so that light modules such as :mod:`node.results.identity` do not pull in highdicom."""
