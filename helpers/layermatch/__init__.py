"""LayerMatch (notebook 06): encoder backbones, pre-training against generator features, segmentation
models on a backbone, and few-label fine-tuning."""
