"""The paper's experiment, done right: each speed-up (GA, AMP, pinned memory) measured alone and combined.

``python recipes/ablate.py --config recipes/cifar10/resnet50.yaml --arms baseline,ga,amp,pin,all --repeats 3``

arms (switches -> recipe overrides), plan (runs, what is held fixed), runner (one ``accelerate launch`` per run),
bound (compute-only throughput), summary (medians, speed-ups), report and plots (the files it writes), cli.
"""
