"""Generators (BigGAN / BigBiGAN, StyleGAN2) behind one interface, and ``load`` for any known checkpoint."""

from helpers.core.modules import CheckpointMismatchError
from helpers.gans.base import Generator, to_uint8
from helpers.gans.checkpoints import CheckpointError, load, save_model

__all__ = ["CheckpointError", "CheckpointMismatchError", "Generator", "load", "save_model", "to_uint8"]
