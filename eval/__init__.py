"""Evaluation: task metrics, the alignment-tax probes, the pairwise judge."""
