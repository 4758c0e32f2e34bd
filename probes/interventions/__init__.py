"""What the model needs: anatomical and intensity ablations, contrast Shapley values."""
