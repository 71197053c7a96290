"""Models: backbones by name, the final layers (heads: dense, QPM, the baselines' sparse one),
the diversity loss, and model files (torch files read with weights_only=True)."""
