"""The sandbox's tekutoko-api, a walking app, reduced to what a rollback
touches: its database schema (golang-migrate style migrations) and sample data.
Run as `python -m sandbox.app migrate ...` or `python -m sandbox.app seed`."""
