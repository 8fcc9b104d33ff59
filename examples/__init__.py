"""Runnable examples for flowforge."""
