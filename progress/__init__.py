"""Progress: the projection of the event log into each student's progress and stored results."""
