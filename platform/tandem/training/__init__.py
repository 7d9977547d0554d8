"""Training of the generative retriever: objectives, staged trainer, memorisation checks.

``config`` (profiles ``ci``/``full``), ``objectives`` (doc→id, query→id, id→query, weighted
multi-task loss), ``denoise`` (stage-1 span corruption), ``data`` (balanced exposure,
progressive curriculum, collation, training pairs from qrels), ``verify`` (exact- and
prefix-match of doc→id), ``trainer`` (:class:`StagedTrainer`), ``checkpoint`` (pickle-free
resume), ``report`` (summary JSON and curve PNG).

Strategies (each a :class:`~tandem.training.config.TrainConfig` switch): ``pseudo``
(template and id→query pseudo-queries with a round-trip filter), ``negatives`` (random,
BM25-hard, in-batch negatives and the sequence-level ranking loss), ``curriculum``
(easy→hard levels, accuracy-adaptive sampling), ``augment`` (query rewrites, document
perturbation, capped mixing), ``adversarial`` (FGSM on input embeddings, gradient-norm
regularisation). Hourly adapters: ``adapter``, ``ewc``, ``peft_methods``.
"""
