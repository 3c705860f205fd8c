"""Matching methods (see conf/matching): gradient matching (dc, dsa), distribution matching
(dm, idm), trajectory matching (mtt) and coreset baselines; all are :class:`Matcher`s."""

from rdd.matching.base import DistillContext, Matcher

__all__ = ["DistillContext", "Matcher"]
