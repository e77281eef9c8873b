"""The package behind the gan-seg-notebooks notebooks, laid out by pipeline stage: core (files, runs, devices),
data, gans, segmentation, metrics, direction_masks (notebooks 02-04), semantic_projection (05), layermatch (06),
widgets, assets and the headless runner."""

__version__ = "0.1.0"
