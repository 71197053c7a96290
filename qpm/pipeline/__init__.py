"""Pipeline stages; each writes its artifacts to a run folder so a run resumes."""
