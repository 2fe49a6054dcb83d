"""Coordinator: scheduler, validator and credit (sans-I/O core) plus the foldnet CLI."""
