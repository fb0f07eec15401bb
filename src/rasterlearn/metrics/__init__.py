"""Accuracy metrics shared by training (validation) and the accuracy tools."""
