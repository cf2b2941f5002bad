"""``python -m cam_server.start_camera_worker``: the camera worker of a cluster (docs/cluster.md)."""

from cam_server.cli.cluster_worker import camera_main as main

if __name__ == "__main__":
    main()
