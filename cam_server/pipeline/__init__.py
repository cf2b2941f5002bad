"""Pipelines, split by the process the code runs in.

* ``server/``: the pipeline server's side (REST process): instance manager, saved configs, backgrounds.
* ``instance/``: the instance process: entry point, the receive → handle → send loop, input, outputs, gates, user
  code loading.
* ``types/``: one module per ``pipeline_type`` (plus what only one type needs: processing parameters, bsread merge,
  fan-in reordering, the script harness), run inside the instance process.
* Here, shared by both sides: ``config`` (the validated config model), ``registry`` (the pipeline types),
  ``instance_spec`` (what the server hands an instance) and ``file_path`` (where FILE output may write).

The server side imports nothing of ``instance/`` or ``types/`` (an import contract in pyproject.toml): it starts
instances by the entry point's dotted name.
"""
