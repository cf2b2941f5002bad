"""``python -m cam_server.start_pipeline_manager``: the pipeline manager of a cluster (docs/cluster.md)."""

from cam_server.cli.cluster_manager import pipeline_main as main

if __name__ == "__main__":
    main()
