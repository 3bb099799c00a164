"""``bridge bench``: every stage measured against the raw limit that bounds it, in one run.

:mod:`bridge.bench.figures` lists the figures; :mod:`bridge.bench.workloads` is Seed B's
load-test workload, seeded; ``docs/benchmarks.md`` explains each figure and records a run.

May import anything; product packages never import it.
"""
