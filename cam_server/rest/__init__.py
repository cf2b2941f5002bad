"""FastAPI applications of the camera and pipeline servers."""
