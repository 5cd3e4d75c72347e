"""The seed of initialization, shuffling, augmentation and mixing."""

from __future__ import annotations

from search.training.trick import Field, Trick, number

TRICK = Trick(
    "seed", "The seed of a run's random choices.",
    (Field("seed", "int", 0, number(0, integer=True),
           "seed of init, shuffling, augmentation and mixing", sample="int"),),
    order=99)
