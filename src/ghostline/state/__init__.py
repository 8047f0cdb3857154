"""A member's durable state, one job per module:

- `member`: the facade (open, seal, receive, close) that joins the kit, the sealing code
  and the state database in the order that never uses pad twice;
- `database`: the state database file (layout, transactions); `store`: its safety
  tables (positions, outbox, accepted, erasure record, relay cursor); `history`: chat
  history, retention, saved-file records, "last seen";
- `erasure`: what the kit's erasures show, and the start-up sweep;
- `usage`: the one "how much pad is left", with the warning thresholds;
- `limits`: the most one commit seals, and the largest message;
- `inspect` (read-only looks for `pad info`) and `recovery` (`pad recover`);
- `kitrecord`: this machine's record of each kit's header.

No user-facing prose here: typed errors (ghostline.errors) carry the data and the CLI
and apps word them.
"""
