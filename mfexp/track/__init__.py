"""The MLflow side of mfexp: `tracker` (runs, tags, models logged from code, links to the UI),
`datasets` (each run's data lineage as MLflow inputs) and `registry` (each sweep's best models and
its champion). The served model itself is `mfexp.pyfunc`, outside this package: every logged model
names that module, so it stays where models already logged find it."""
