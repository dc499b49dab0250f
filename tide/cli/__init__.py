"""tide/cli."""
