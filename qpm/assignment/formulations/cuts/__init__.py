"""The cut formulation: the loop (``loop``), its growing Pyomo model (``relaxation``), the
top-k value cuts (``separation``) and the redundancy penalty rows (``penalty``)."""
