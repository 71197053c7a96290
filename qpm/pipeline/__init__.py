"""Training: the stages of a run (stages/), the runner that skips, resumes and records them
(run.py), the training loop (training.py), feature extraction, the locality bias, the checks
before training, reference-checkpoint import, and torch.distributed (distributed/)."""
