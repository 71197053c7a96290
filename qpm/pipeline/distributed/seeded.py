"""Augmentation that depends only on (seed, epoch, sample), never on who loads the sample.

Random transforms draw from torch's global generator, so a sample's augmentation would
depend on which process (and which loader worker) happens to read it and on what it read
before. The training loaders instead hand each dataset read a seed computed from the run's
seed, the epoch and the sample index: one process and N torchrun processes (and any number of
workers, and a resumed run) then augment every sample identically, and together with the
global batch and global BatchNorm an N-process run repeats the one-process computation.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, Sampler

_MIX = 0x9E3779B97F4A7C15  # odd 64-bit constant: spreads nearby (epoch, index) pairs apart


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one read of sample ``index`` in ``epoch``."""
    h = (int(seed) * 1_000_003 + int(epoch)) * _MIX + int(index) * (_MIX >> 7)
    return h % (1 << 63)


class SeededSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, seed)`` for the indices of ``sampler``; forwards ``set_epoch``."""

    def __init__(self, sampler: Sampler[int], seed: int) -> None:
        self.sampler, self.seed, self.epoch = sampler, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for i in self.sampler:
            yield int(i), sample_seed(self.seed, self.epoch, int(i))

    def __len__(self) -> int:
        return len(self.sampler)


class SeededReads(Dataset):
    """``dataset[(i, seed)]`` is ``dataset[i]`` with torch's CPU generator seeded by ``seed``
    for the read, and restored afterwards."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        # What torch.random.fork_rng(devices=[]) does, at a third of its cost per read.
        generator = torch.default_generator
        state = generator.get_state()
        generator.manual_seed(seed)
        try:
            return self.dataset[index]
        finally:
            generator.set_state(state)
