"""Tandem: hybrid product search (BM25 via Lucene + generative retrieval) — core library.

Heavy dependencies (torch, pyserini) are imported lazily by the subpackages that need
them, so importing :mod:`tandem` and running ``tandem --help`` stays fast.
"""

__version__ = "0.1.0"
