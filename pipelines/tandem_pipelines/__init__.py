"""Kubeflow Pipelines v2 components and pipelines that call the :mod:`tandem` core."""
