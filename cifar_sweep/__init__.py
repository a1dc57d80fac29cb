"""cifar_sweep: Hydra configs, Lightning training and Optuna sweeps for image classification."""
