"""Authentication and authorization: bearer tokens stored hashed in Postgres, and roles checked per RPC.

roles.py holds the method-to-roles table, scopes.py what a scoped token may name, store.py the tokens,
service.py the Authenticator that each call's scope (calls.py) asks.
"""
