"""Elves: an ops automation platform, event-sourced on Kafka."""

__version__ = "0.1.0"
