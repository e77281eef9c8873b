"""Generators (BigGAN / BigBiGAN, StyleGAN2) behind one interface, and ``load`` for any known checkpoint."""

from helpers.gans.base import CheckpointMismatchError, Generator, to_uint8
from helpers.gans.checkpoints import CheckpointError, load, save_model

__all__ = ["CheckpointError", "CheckpointMismatchError", "Generator", "load", "save_model", "to_uint8"]
