"""Train Deep Learning Model's internals: settings, setup, fit, model folder, and the task."""
