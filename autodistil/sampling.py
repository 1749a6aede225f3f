"""Supernet sampling strategies: which subnets of a SuperLM train on each step, one class each (registry
:data:`SAMPLERS`, the ``sampling`` key / ``--sampling`` flag).

A strategy's ``sample(archs_by_size, num_random, rng)`` gets the sub-space's architectures sorted by parameter count
(smallest first) and a ``random.Random`` seeded from ``(seed, step)``, so a resumed run samples exactly the subnets the
uninterrupted run would. A new strategy is one decorated class in one file::

    @SAMPLERS.register("largest_only")
    class LargestOnly(Sampler):
        def sample(self, archs_by_size, num_random, rng):
            return [archs_by_size[-1]]
"""

from __future__ import annotations

import random

from distiller_nlp.core.registry import Registry

__all__ = ["SAMPLERS", "Sampler", "SandwichSampler", "UniformSampler", "sample_subnets"]

#: Sampling strategies by name: ``name -> Sampler subclass``.
SAMPLERS: Registry[type] = Registry("sampling strategy", plural="sampling strategies")


class Sampler:
    """Base class: ``sample`` returns the subnets of one step; ``named`` names the losses worth logging apart."""

    #: names under which the first returned subnets' losses are logged (e.g. ``rel_largest``)
    named: tuple = ()

    def sample(self, archs_by_size: list, num_random: int, rng: random.Random) -> list:
        """The subnets of one step (``archs_by_size`` smallest first)."""
        raise NotImplementedError


@SAMPLERS.register("sandwich")
class SandwichSampler(Sampler):
    """AutoDistil's rule (the sandwich rule of BigNAS/AutoFormer): the largest and the smallest subnet plus
    ``num_random`` distinct random ones from the rest."""

    named = ("rel_largest", "rel_smallest")

    def sample(self, archs_by_size: list, num_random: int, rng: random.Random) -> list:
        """``[largest, smallest, *random]`` (only ``[largest]`` when the space has one subnet)."""
        largest, smallest = archs_by_size[-1], archs_by_size[0]
        middle = archs_by_size[1:-1]
        chosen = [largest] if largest == smallest else [largest, smallest]
        return chosen + rng.sample(middle, min(num_random, len(middle)))


@SAMPLERS.register("uniform")
class UniformSampler(Sampler):
    """One subnet drawn uniformly at random."""

    def sample(self, archs_by_size: list, num_random: int, rng: random.Random) -> list:
        """``[one subnet]`` (``num_random`` is not used)."""
        return [rng.choice(archs_by_size)]


def sample_subnets(archs_by_size: list, sampling: str, num_random: int, seed: int, step: int) -> list:
    """Subnets of one step under the strategy named ``sampling`` (a pure function of ``seed`` and ``step``)."""
    rng = random.Random(seed * 1_000_003 + step)
    return SAMPLERS.get(sampling)().sample(archs_by_size, num_random, rng)
