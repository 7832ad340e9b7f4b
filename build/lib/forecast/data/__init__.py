"""The data layer: raw prices (download, import, sample), feature tiers, manifests.

Flow: a source (`sources`) gives a frame -> `raw.write_raw` validates it and writes
`<data_dir>/raw/<SYMBOL>.parquet` -> `tiers.build_and_write` turns raw files into
`<data_dir>/processed/<SYMBOL>_<tier>.parquet`; `manifest` records and verifies every file.
Modules are imported on use (`from forecast.data.raw import read_raw`) so that
`import forecast.data` stays cheap.
"""
