"""exportsweep's orchestrator, in four rooms: ``cli`` (the command line), ``execute`` (running
sweeps, locally or on Ray), ``results`` (the Parquet results store) and ``views`` (report,
diff, JUnit).  Arrows point one way: cli -> execute -> results -> exporter; views -> results.
"""
