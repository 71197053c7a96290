"""Torch modules: backbones, the sparse binary QPM layer, the feature-diversity loss."""
