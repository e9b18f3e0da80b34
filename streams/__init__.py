"""The running service: faust pipeline, CLI, configuration, topics, canonical events.

On a 2-core machine OpenBLAS worker threads spin after each multi-threaded BLAS call and slow the
per-bar correlation updates 2-3x (measured by bench/correlation.py); the service does small
matrix work per bar, so one BLAS thread is the right default. Set before numpy is imported.
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
