"""``python -m cam_server.start_pipeline_server``: same as the ``pipeline_server`` console script."""

from cam_server.cli.pipeline_server import main

if __name__ == "__main__":
    main()
