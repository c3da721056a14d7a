"""Views of results: the HTML report (with its charts and assets), run diffs and JUnit XML.
They read ``orchestrator.results`` only; they never run anything."""
