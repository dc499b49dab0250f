"""flashboot."""
