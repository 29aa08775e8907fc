"""One module per schema revision, written by hand and checked by the drift test."""
