"""``python -m cam_server.start_pipeline_worker``: the pipeline worker of a cluster (docs/cluster.md)."""

from cam_server.cli.cluster_worker import pipeline_main as main

if __name__ == "__main__":
    main()
