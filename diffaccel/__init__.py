"""diffaccel's top-level workflows that span the sweep (Ray side) and codegen.

`codegen` imports no torch, Ray or diffusers; a workflow that runs sweeps and then
writes tasks lives here instead, so imports still run one way (sweep, codegen -> here).
"""
