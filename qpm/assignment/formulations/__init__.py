"""Formulations: the ways an assignment problem becomes something a solver answers.

``full`` (one straightforward Pyomo model, every w_ic), ``cuts`` (selection, one value per
class and cuts added in rounds) and ``greedy`` (the heuristic, which needs no solver). The
facade :func:`qpm.assignment.solve` picks one and, for full and cuts, the backend.
"""
