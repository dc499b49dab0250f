"""tide/api."""
