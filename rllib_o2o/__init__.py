"""Offline-to-online RL on Ray RLlib with Actor-Critic Alignment (ACA)."""

__version__ = "0.1.0"
