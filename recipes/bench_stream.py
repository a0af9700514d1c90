"""What streaming costs, on the same local parquet shards: ``python recipes/bench_stream.py``.

The map-style stream path's and the streamed path's training-loader images/s with workers, and the time to the first
training batch for a dataset and one ten times larger, as a Markdown table; ``--help`` for the sizes.
"""

import sys

from accel_recipes.bench.stream import main

if __name__ == "__main__":
    sys.exit(main())
