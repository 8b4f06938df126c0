"""Offline-to-online RL on Ray RLlib with Actor-Critic Alignment (ACA).

The Python API (docs/api.md): `run`, `PipelineConfig`, `export_policy`, `load_policy`.
They are imported on first use, so `import rllib_o2o` pulls in neither Ray nor torch.
"""

from importlib import import_module

__version__ = "0.1.0"

_API = {
    "run": "rllib_o2o.api",
    "PipelineConfig": "rllib_o2o.config",
    "export_policy": "rllib_o2o.export",
    "load_policy": "rllib_o2o.export",
}
__all__ = ["PipelineConfig", "export_policy", "load_policy", "run"]


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_API[name]), name)
