"""Semantic projection (notebook 05): the decoder over generator features, its fitting, annotations,
the learned refiner, the simulated annotator and synthetic dataset generation."""
