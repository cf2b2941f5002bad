"""The pipeline instance process: entry point, the shared loop, input, outputs, gates and user code loading."""
