from rllib_o2o.algorithms.o2o_sac.o2o_sac import O2OSAC, O2OSACConfig

__all__ = ["O2OSAC", "O2OSACConfig"]
