"""The data paths side by side in one process: ``python recipes/bench_datapath.py --config RECIPE.yaml``.

One model and optimizer are fed in turn by each source (the compute-only bound, the resident path, the stream path
at several worker counts) in short timed windows, round after round; the report gives each source's images/s and
its fraction of the bound as medians of per-round ratios. Any recipe field can be overridden; ``--help`` for more.
"""

import sys

from accel_recipes.bench.datapath_cli import main

if __name__ == "__main__":
    sys.exit(main())
