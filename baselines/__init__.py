"""Baseline methods, one file each, registered with ``ssvi.methods.register_method``.

Every ``*.py`` module in this package is imported when the method registry is first used, so adding
a baseline means adding one file here and naming it in a run config (``method: <name>``).
"""
