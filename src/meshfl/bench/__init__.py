"""Benchmarks that ship with the installed library, run as ``meshfl bench ...``.

Three names, three things. :mod:`meshfl.bench` (this package) holds the benchmarks a user
runs on their own install, behind the ``meshfl bench`` command: today
``meshfl bench privacy``, accuracy against the privacy budget ε
(:mod:`meshfl.bench.privacy`). The top-level ``benchmarks/`` folder of the repository is
not installed: it holds the scripts that produced the figures quoted in the docs
(federated vs local-only vs centralized per agent, DP-SGD and CKKS overheads, ...; see
``benchmarks/README.md``). :mod:`meshfl.baselines` is no benchmark at all but the two
reference models both of them (and the integration tests) compare a federation against:
each MSP alone, and everyone's rows pooled.
"""

from meshfl.bench.privacy import privacy_sweep, write_privacy_report

__all__ = ["privacy_sweep", "write_privacy_report"]
