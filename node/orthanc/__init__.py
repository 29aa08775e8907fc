"""Running the node's Orthanc: configuration rendering, process control, REST client."""
