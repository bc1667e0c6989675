"""Train a recipe: ``python train.py --recipe models/small-resnet-se.yaml --out runs/se``.

Also under ``torchrun --nproc_per_node=N train.py ...`` (DDP). ``--help`` lists
the options; :mod:`attnviz.cli.train` holds them.
"""

from attnviz.cli.train import main

if __name__ == "__main__":
    raise SystemExit(main())
