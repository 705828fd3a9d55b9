"""Evaluation: graders, judges, scoring and Pareto fronts."""
