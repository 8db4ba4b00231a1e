"""Offline training: MNIST loading, the PPCA, autoencoder and VAE fits, their metrics and report, and the CLI that
writes them as lvm artifacts. Never imported by the service."""
