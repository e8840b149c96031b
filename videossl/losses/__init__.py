"""videossl.losses"""
