"""Benchmarks behind `agentstack bench ...`: side-by-side ratios, a markdown report and a plot."""
