"""The node's REST API under /ai/, independent of Orthanc so it can be tested on its own."""
