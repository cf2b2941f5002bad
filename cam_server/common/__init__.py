"""Infrastructure shared by the camera and pipeline servers: errors, names, config files, instance processes."""
