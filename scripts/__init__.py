"""Helper scripts: demo, Meltano environment, Hub definition and README generators."""
