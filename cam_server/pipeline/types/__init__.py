"""One module per ``pipeline_type`` (see ``cam_server.pipeline.registry``), run in the instance process."""
