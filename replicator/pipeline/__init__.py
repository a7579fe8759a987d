"""The per-record pipeline: filters (Lambda FilterCriteria), transforms, and the stage runner."""
