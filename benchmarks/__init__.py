"""Benchmarks for FlowForge."""
