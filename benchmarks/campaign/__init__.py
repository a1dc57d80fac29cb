"""The GPU campaign (`python -m benchmarks.campaign`): __main__ runs the stages in stages.py and
records them; readme.py writes the README section from the results; airbench.py is the stretch
stage."""
