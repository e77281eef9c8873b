"""Inspection (notebook 07): any trained model on any image folder, and the reproduction report's pieces."""
