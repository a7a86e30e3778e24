"""`instructune studio`: a local web app over a folder's prepared data (the trained tokens of
every example), training runs (curves, live), eval reports, a chat playground over the shared
inference engine, and launching the CLI's commands. See `app.create_app`."""
