"""Small training tasks with data that ships in a package or is generated (no downloads).

Each task gives a model factory, batches and a validation loss, shared by the demo, the
examples and the benchmarks.
"""
