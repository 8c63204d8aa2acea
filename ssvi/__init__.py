"""ssvi-bench: Sparse Subspace Variational Inference (Li et al., ICLR 2024) and its baselines.

Modules, in the order a training step uses them: ``config`` (the run config), ``data``, ``models`` and
``bayesianize`` / ``layers`` (Bayesian networks), ``criteria`` and ``subspace`` (the sparse subspace),
``methods`` (SSVI and the method registry), ``trainer``, ``evaluate`` and ``metrics``, ``flops``.
Command line: ``python -m ssvi --help``.
"""

__version__ = "0.1.0"
