"""A run, stage by stage: fetch the sources, judge the papers, record each profile's digest, select and deliver it."""
