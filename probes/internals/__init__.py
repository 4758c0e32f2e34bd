"""Inside the model: linear probes, activation patching, latent ROI geometry."""
