"""What GhostLine says that more than one front end says: the sentences `ghostline`'s
commands (`cli/`), the chat app (`tui/`) and the web page (`web/`) share, one module a
subject, so that each is worded once and all three say it alike.

A UI-layer package like the three apps, and below them: it imports no app, and library
code imports nothing from it. `hints` (what to do about a connection failure),
`relaylines` (the relay's store, missing seqs, a failing relay), `presence` (members
coming and going), `repeats` (which status lines are worth showing again), `padtalk`
(pad moving between members, messages that fail their checks), `padleft` (how much pad
is left), `eventlines` (the client's events that are only a sentence), `filelines` (a
file in the conversation), `history` (how long the local history is kept). Names passed
in must already be safe to show.
"""
