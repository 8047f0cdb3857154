"""`ghostline web`: the chat in a browser, served by this process on 127.0.0.1.

`security` (what every request must show), `session` (the client's events as JSON for
the page), `transfers` (files on the page), `lines` (what the page shows, made safe),
`server` (aiohttp routes), `static/` (the page: HTML, CSS and JS, no build step).
"""
