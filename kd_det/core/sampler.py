"""A sampler that continues its stream where a checkpoint left it."""
import itertools

from torch.utils.data import Sampler

__all__ = ["ResumableSampler"]


class ResumableSampler(Sampler):
    """Any sampler (e.g. Detectron2's infinite per-rank ``TrainingSampler``), started ``start`` indices
    into its stream.

    A resumed run sets ``start`` = iterations done x images per process (before the loader's iterator is
    created) and sees the indices an uninterrupted run would; the inner sampler must yield the same
    stream for the same seed.
    """

    def __init__(self, sampler, start: int = 0):
        self.sampler, self.start = sampler, start

    def __iter__(self):
        return itertools.islice(iter(self.sampler), self.start, None)
