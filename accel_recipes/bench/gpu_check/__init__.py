"""The GPU check: every measurement BENCHMARKS.md needs from a GPU lent for minutes, in one command (``plan``:
what runs; ``data``: the data it brings; ``cli``: running it and the table)."""
