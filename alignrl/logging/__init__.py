"""Metrics files, TensorBoard/W&B reporting and PNG plots."""
