"""The training engine every recipe shares: networks, losses, data (model grids, patches, augmentation,
normalisation), the training loop (checkpoints, resume, cancel, out-of-memory), inference and model files.

Imports torch and MONAI; nothing here reads job configs (that is :mod:`ExtremeSegLib.recipes`).
"""
