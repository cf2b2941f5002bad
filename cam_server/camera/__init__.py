"""Camera server: camera configs, frame sources and the per-camera instance processes."""
