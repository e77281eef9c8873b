"""Fixtures of the semantic-projection tests."""

import pytest

from helpers.gans import load
from helpers.gans.stylegan2 import StyleGAN2


@pytest.fixture(scope="module")
def stylegan() -> StyleGAN2:
    """The shipped default StyleGAN2, loaded once per test module."""
    return load("default-stylegan2")
