"""Class map to polygons: windowed polygonisation, exact seam merge, measures, legend, writers."""
