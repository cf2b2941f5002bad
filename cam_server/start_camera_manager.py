"""``python -m cam_server.start_camera_manager``: the camera manager of a cluster (docs/cluster.md)."""

from cam_server.cli.cluster_manager import camera_main as main

if __name__ == "__main__":
    main()
