"""The benchmark suite: every cache backend measured against its physical limit in one run.

``python -m bench.run [--quick]`` (``make bench`` / ``make bench-quick``) writes
``bench/RESULTS.md``, ``bench/results.json`` and ``bench/throughput.png``. Every figure is a ratio
against a limit measured in the same run (so it holds on a noisy machine), with the absolute
numbers beside it for context.
"""
