"""``bridge demo``: the whole bridge between two emulated regions, and the helpers it needs.

Holds the one-way and bidirectional demos, the moto emulator launcher and a paced workload. Used by
the demo, the benchmarks and the tests; product packages never import it.

May import anything in ``bridge`` except ``bridge.cli`` and ``bridge.bench``.
"""
