"""Orthanc AI node: routes studies stored in Orthanc to model pipelines and stores the results
(DICOM SEG and TID 1500 SR) back into the same study."""

__version__ = "0.2.0"

#: Written into Manufacturer / SoftwareVersions of every object the node creates; the loop
#: guard recognises the node's own output by it.
MANUFACTURER = "Orthanc AI node"

#: The name of the built-in destination that stores results back into the node's own Orthanc:
#: rules, jobs and deliveries refer to it, so it lives below all of them.
THIS_ORTHANC = "this-orthanc"
