"""The main job on the bundled NEON sample: export, train, infer, score, report."""
