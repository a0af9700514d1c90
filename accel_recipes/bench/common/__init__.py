"""What both benchmarks share: ``stats`` (medians, spreads, quartiles), ``environment`` (device, CPU, software,
date), ``recipe`` (recipe fields on a benchmark's command line, resolved here or forwarded to a run) and ``writer``
(the report files, written atomically)."""
