"""Feature-class assignment: numpy arrays in, a verified solution out (no torch needed)."""
