"""The tutoring app: courses, conversations, privacy, safety and teacher review."""
