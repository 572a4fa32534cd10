"""mlactl's torch engine: the MLA model, optimizers, data order and checkpoints of the tfjs engine, in PyTorch.

`python -m mlactl_torch train --job JOB.json` runs one training job for the mlactl CLI (PROTOCOL.md);
`python -m mlactl_torch info` prints what this interpreter offers. Importing the package does not import torch,
so the entry point can set thread counts first.
"""

__version__ = "0.1.0"
