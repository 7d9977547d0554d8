"""The application layer: the ``tandem`` command line (:mod:`tandem_app.cli`) and the demo
(:mod:`tandem_app.demo`).

The only code that may import the core (``tandem``), the services (``tandem_services``) and
the pipelines (``tandem_pipelines``) together; nothing imports it back. The rule is checked by
``tests/unit/test_import_graph.py``.
"""
