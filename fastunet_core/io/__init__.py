"""Raster and vector files: windowed reads, class-map and probability outputs, atomic writes, resume."""
