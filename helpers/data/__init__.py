"""Datasets: the procedural embedded-default domain and image/mask folders on disk."""
