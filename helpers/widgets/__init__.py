"""Notebook widgets (latent-direction explorer, mask annotator) with Python APIs that tests drive without a browser."""
