"""tide."""
