"""Agents: the hierarchical PPO-over-SAC trainer (``trainer``) and its checkpoints (``checkpoint``).

Import the submodules; they import Stable-Baselines3, which takes a second or two.
"""
