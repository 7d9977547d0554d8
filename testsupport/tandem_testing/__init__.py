"""Test support for Tandem: infrastructure fixtures (Kafka, Redis), fault and fuzz harnesses,
the retriever contract suite, micro model folders and synthetic catalogs.

Not part of the product: the wheel ships ``tandem``, ``tandem_services``,
``tandem_pipelines`` and ``tandem_app`` only. ``tests/conftest.py`` and ``bench/__init__.py``
put ``testsupport/`` on ``sys.path`` (and on ``PYTHONPATH`` for the processes they start).
It may import every layer; nothing in the product imports it (``tests/unit/test_import_graph.py``).
"""
