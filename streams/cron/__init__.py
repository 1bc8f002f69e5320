"""Scheduled tasks: cron rules, the cron fold and its wiring."""
