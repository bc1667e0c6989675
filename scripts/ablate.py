"""Run an ablation grid: ``python scripts/ablate.py models/ablation-small.yaml --out runs/ablation``.

The same as ``attnviz ablate``; see :mod:`attnviz.study.ablate`.
"""

import sys

from attnviz.cli import main

if __name__ == "__main__":
    sys.exit(main(["ablate", *sys.argv[1:]]))
