"""Built-in demo models, generated locally with no download: see :mod:`nimctl.models.builtin`.

Kept empty so that ``python -m nimctl.models.builtin`` runs without a double import and
importing the package stays cheap.
"""
