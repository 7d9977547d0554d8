"""CRD schemas the pipelines validate rendered manifests against (package data: ``*.json``)."""
