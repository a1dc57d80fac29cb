"""Our sweeper against its peers (`python -m benchmarks.peers`, issue 26): problem.py and its
YAML say what every arm solves; one module per arm (stock, optuna_script, ray_tune, ours,
promote; arms.py lists them) runs a study as its own docs would; record.py turns what an arm
recorded into its curve and totals; results.py, plot.py and readme.py write the file, the plot
and the README section."""
