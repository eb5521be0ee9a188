"""Research benchmarks that ship with the library (``meshfl bench ...``)."""

from meshfl.bench.privacy import privacy_sweep, write_privacy_report

__all__ = ["privacy_sweep", "write_privacy_report"]
