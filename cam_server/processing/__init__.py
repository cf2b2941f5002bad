"""Pure image-processing functions on numpy arrays (no I/O, no processes): camera transforms, simulation,
pipeline pre-processing and the default statistics. See docs/processing.md."""
