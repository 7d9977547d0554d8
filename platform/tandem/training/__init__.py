"""Training of the generative retriever: objectives, staged trainer, memorisation checks.

``config`` (profiles ``ci``/``full``), ``objectives`` (doc→id, query→id, id→query, weighted
multi-task loss), ``denoise`` (stage-1 span corruption), ``data`` (balanced exposure,
progressive curriculum, collation, training pairs from qrels), ``verify`` (exact- and
prefix-match of doc→id), ``trainer`` (:class:`StagedTrainer`), ``checkpoint`` (pickle-free
resume), ``report`` (summary JSON and curve PNG), ``synthetic`` (the ci catalog).
"""
