"""Pipeline server side (config, stores, manager) and the pipeline instance loop."""
