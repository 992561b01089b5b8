"""Analysis: statistics, findings, tables, plots and the method/tuning reports. Reads the results
store (store.results) and configuration tables; never the run side or orchestration."""
