"""Whether to believe a heatmap, measured: deletion/insertion, model randomisation, ground truth, the causal foci test,
bootstrap intervals (`stats`) and the verdicts built on them (`verdicts`)."""
