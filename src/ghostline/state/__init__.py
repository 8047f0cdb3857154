"""A member's durable state: the safety tables, history, the member facade."""
