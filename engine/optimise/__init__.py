"""The signal plan optimiser: CP-SAT over integer seconds, then a local search on the cyclic flow profile model.

Public surface::

    inst = build_instance(net, demand, OptimiseOptions(...))   # constraints and data; GronvagError if infeasible
    res = optimise(inst)                                       # res.solution: validated Solution
    validate(inst, res.solution)                               # independent check (empty list = valid)
    to_planset(inst, res.solution)                             # engine.plan.PlanSet

Around it, each optional: ``structure`` (phase skipping, phase orders) and ``order`` (the model's choice of order),
``simcheck`` (SUMO chooses among model candidates) and ``simpolish`` (local search in SUMO), ``periods``
(time-of-day plans joined by transition cycles), ``explain`` (why a request is infeasible), ``output`` (files,
summary). `gronvag optimise` is :func:`engine.optimise.cli.optimise_main`.
"""

from engine.optimise.instance import DEFAULT_STOP_COST_S, Instance, OptimiseOptions, Pin, build_instance
from engine.optimise.run import OptimiseResult, optimise
from engine.optimise.solution import SignalTiming, Solution, current_solution, to_planset, validate

__all__ = ["DEFAULT_STOP_COST_S", "Instance", "OptimiseOptions", "OptimiseResult", "Pin", "SignalTiming", "Solution",
           "build_instance", "current_solution", "optimise", "to_planset", "validate"]
