"""Problems: the curriculum for students (cached in Redis) and teachers' edits (MongoDB)."""
