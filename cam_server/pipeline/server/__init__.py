"""The pipeline server side (runs in the REST process): instances, saved configs, backgrounds."""
