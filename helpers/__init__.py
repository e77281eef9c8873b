"""Shared code behind the gan-seg-notebooks notebooks: data, generators, metrics, runners."""

__version__ = "0.1.0"
