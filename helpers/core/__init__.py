"""Project-wide mechanisms: atomic file writes, paths, run folders, runtime set-up, manifests, plots."""
