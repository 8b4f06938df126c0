"""The run directory: its layout, its stages and its copy on storage.

* `names`: every file and directory name in a run (pure).
* `stage`: `StageDir`, one stage's checkpoints, DONE.json marker and uploads.
* `mirror`: `Mirror`, the run's copy on storage (`--storage-path`).
* `layout`: `RunDir`, the run directory as an object that hands out the above.

Each module imports only those above it; nothing here imports the stages, the pipeline or Ray. (Not
`rllib_o2o.run`: that name is the Python API's function.)
"""
