"""Slicer-free core of SoftSpinalCordSeg: I/O, soft cord segmentation and CSA morphometry.

Nothing here imports Slicer; torch and monai are imported lazily inside the functions that need them.
"""

__version__ = "0.1.0"
