"""HiGen: fuzz deep-learning compilers with NNSmith-generated models, steered by hierarchical RL."""

__version__ = "0.1.0"
