"""Benchmarks: AutoLRS against tuned LR schedules, and the cost of its machinery.

Run with ``python -m bench`` (``make bench``); ``python -m bench --help`` lists the options.
"""
