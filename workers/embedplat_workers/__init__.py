"""Celery side of embedplat: thin tasks over embedplat.sync (see docs/deploy.md)."""
