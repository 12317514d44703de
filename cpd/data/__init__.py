"""Datasets that build offline from packaged data (no download)."""
