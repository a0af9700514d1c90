"""Benchmarks, beside the core: what each speed-up buys, and how fast each data path feeds the model.

- ``ablate`` (``python recipes/ablate.py``): each speed-up (GA, AMP, pinned memory) measured alone and combined,
  one clean ``accelerate launch recipes/train.py`` per arm and repeat;
- ``datapath`` (``python recipes/bench_datapath.py``): the data paths side by side in one process, one model fed in
  turn by each source (``datapath_cli`` is its command line, ``datapath_setup`` its one contact with the engine);
- ``common``: what both share: the statistics (``stats``), the machine, software and date a report starts with
  (``environment``), the one way recipe fields are taken and forwarded (``recipe``) and the report writer
  (``writer``).

The core (everything in ``accel_recipes`` outside ``bench``) never imports this package.
"""
