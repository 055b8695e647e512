"""One ConfigurableResource per external system; the only code that speaks a wire protocol."""
