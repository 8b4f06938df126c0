"""The run directory: its layout, its stages, its copy on storage and who may write it.

* `names`: every file and directory name in a run (pure).
* `stage`: `StageDir`, one stage's checkpoints, DONE.json marker and uploads.
* `mirror`: `Mirror`, the run's copy on storage (`--storage-path`).
* `lock`: `RunLock`, one process at a time in a run (and in its storage copy).
* `layout`: `RunDir`, the run directory as an object that hands out the above.

Each module imports only those above it; nothing here imports the stages, the pipeline or Ray. (Not
`rllib_o2o.run`: that name is the Python API's function.)
"""
