"""The ``studio`` command (tyro). Each verb lives in its own module and is imported on demand."""
