"""Big GANs Are Watching You (notebooks 02-04): embeddings, latent-direction discovery and ranking,
mask synthesis from G(z) and G(z + r h), and self-training."""
