"""``python -m cam_server.start_camera_server``: the camera server, as in the README."""

from cam_server.cli.camera_server import main

if __name__ == "__main__":
    main()
