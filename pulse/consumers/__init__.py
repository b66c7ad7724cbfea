"""Readers of the pipeline's topics: ``pulse tail``, ``pulse alerts`` and the live board."""
