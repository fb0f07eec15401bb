"""Export Training Data internals: settings, chip plans, cutting, class data, distributed runs."""
