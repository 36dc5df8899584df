"""Experiment recipes that a part's notebooks share, one module per part (``part2``, ``part3``, ...),
mirroring ``notebooks/partN/`` and ``embedlessons/exercises/partN.py``.

``python -m embedlessons.experiments`` runs the book's recorded experiments (see
:mod:`embedlessons.recorded`).
"""
