"""Checkpoint converters between released weight layouts and ours."""
