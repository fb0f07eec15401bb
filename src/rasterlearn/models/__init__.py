"""Model architectures for Train Deep Learning Model, keyed by ArcGIS model type.

Models never read data files; the only file they may read is a backbone weights file.
``registry`` builds a model of a type, ``backbones`` the encoders, ``arguments`` declares the
model arguments (importing it loads no deep-learning framework).
"""
