"""The unified web view: Datamon's endpoints, the lineage graph, Styx's workflows, instances and
backfills, and Gabo's event types, as server-rendered pages that link to each other (``app``), with
the data each page shows read in bounded amounts (``views``, ``lineage``)."""
