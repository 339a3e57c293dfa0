"""Publishing a run, one way: run folder -> card -> export folder -> Hub (and a Space)."""
