"""Progress: a student's attempts, scores and streak (read from the progress projection)."""
