"""Pure scoring logic for each pipeline stage: no Flask, no database session, no Redis."""
