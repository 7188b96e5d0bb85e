"""Recipes: end-to-end pipelines over the framework, tasks and strategies (STYLE §1).

A recipe may import anything; nothing in the framework or in a task imports a recipe. :mod:`.demo` is the
``adamergex demo`` pipeline on the synthetic world (its job pool in ``_jobs``, its tables and plot in
``_report``).
"""
