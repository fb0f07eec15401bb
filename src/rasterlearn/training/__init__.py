"""Training internals: the Lightning task, data module and the model-folder report."""
