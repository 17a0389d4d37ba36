"""The curriculum: levels, sessions and problems, their file format, and their storage."""
