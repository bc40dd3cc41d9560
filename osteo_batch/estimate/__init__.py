"""``osteo-batch estimate``: how long the backlog will take on this machine, timed before it starts.

A program's first night is its whole backlog. Before it starts, the estimate
sweeps the source as the nightly run would (the same store, so that work is
not done twice), then times a short real run on a seeded sample of the
pending images with the run's own model and settings, and projects it onto
the backlog: wall time, disk, nights at a window, and what more cores, Ray
shards or a GPU (a figure measured elsewhere, named with its machine) would
change. It writes no scores and no heat maps; the table goes to the store's
``estimates`` table.

sample (which images) -> timing, cores (measure) -> project (extrapolate, pure) -> table (render)
-> record (the store row); :mod:`.run` runs them in that order; :mod:`.result` is what it returns.
"""
