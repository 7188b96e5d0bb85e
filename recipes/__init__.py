"""Recipes: end-to-end pipelines over the framework, tasks and strategies (STYLE §1).

A recipe may import anything; nothing in the framework or in a task imports a recipe. :mod:`.ablate` is the
``adamergex ablate`` runner; :mod:`.demo` is ``adamergex demo``, a grid of that runner on the synthetic world
(run on the process pool of ``_jobs``; its tables and plot in ``_report``).
"""
