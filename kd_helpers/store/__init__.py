"""The run store: the results store's format and readers (results), the study's configuration
tables (presets) and notebook parameter rules (params). Imports the core only."""
