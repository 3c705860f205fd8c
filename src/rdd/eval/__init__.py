"""The evaluation protocol (the `eval` config group): train fresh networks on a set, score them.

Modules: ``settings`` (the protocol a run resolves from its config: networks, partition, the
step size a set learned), ``training`` (one evaluation network), ``scoring``
(:func:`evaluate_synset`: every network of the protocol on every test set), ``partition``
(subgroups of the test set), ``corruptions`` (the image shifts and corruptions themselves),
``shifted_sets`` (the shifted test sets a run scores, cached on disk).
"""

from rdd.eval.scoring import Evaluation, evaluate_synset

__all__ = ["Evaluation", "evaluate_synset"]
