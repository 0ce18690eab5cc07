"""Records: the schema, reading and writing them, validation, foreign formats, dialogue, dimensions, prompt tokens."""
