"""PostHog: one PostHog event per Langfuse span, idempotent by Langfuse's own uuid."""
